//! How command results are shown: aligned text tables for people, JSON for programs, and
//! ISO 8601 times. Owns formatting only; what goes in a result is the command's business.

use std::io::{self, Write};

/// Output format of a query or inspection command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// One JSON document.
    Json,
}

/// Output format of a listing or query: a table, JSON, or CSV for spreadsheets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
}

/// Writes a listing in `format`: the table as aligned text or CSV, or `json` pretty-printed.
pub fn write_list(
    table: &Table,
    json: &serde_json::Value,
    format: ListFormat,
    out: &mut dyn Write,
) -> io::Result<()> {
    match format {
        ListFormat::Table => table.write(out),
        ListFormat::Csv => table.write_csv(out),
        ListFormat::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(json).unwrap_or_default()
        ),
    }
}

/// A text table: a header row and data rows, printed with columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(header: I) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells print empty, extra cells are kept.
    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Writes the table as CSV: header row, then data rows; cells with commas, quotes or line
    /// breaks are quoted (RFC 4180).
    pub fn write_csv(&self, out: &mut dyn Write) -> io::Result<()> {
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = row
                .iter()
                .map(|c| {
                    if c.contains([',', '"', '\n', '\r']) {
                        format!("\"{}\"", c.replace('"', "\"\""))
                    } else {
                        c.clone()
                    }
                })
                .collect();
            write!(out, "{}\r\n", cells.join(","))?;
        }
        Ok(())
    }

    /// Writes the table, two spaces between columns, no trailing spaces.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let columns = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `unix_seconds` as an ISO 8601 UTC timestamp, e.g. `2020-05-07T21:00:00Z`; out-of-range
/// values (beyond year 9999) are shown as the raw number.
pub fn iso_utc(unix_seconds: u64) -> String {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix_seconds.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns are padded to the widest cell and lines carry no trailing spaces.
    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(["A", "LONG HEADER", "C"]);
        table.row(["wide cell", "x", ""]);
        table.row(["y", "z", "last"]);
        let mut out = Vec::new();
        table.write(&mut out).expect("writing to a Vec");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "A          LONG HEADER  C\nwide cell  x\ny          z            last\n"
        );
    }

    /// Times print as UTC ISO 8601.
    #[test]
    fn iso_times() {
        assert_eq!(iso_utc(1_588_885_200), "2020-05-07T21:00:00Z");
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(u64::MAX), u64::MAX.to_string());
    }
}
