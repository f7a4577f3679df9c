//! The demo's page: one self-contained HTML file (inline CSS and SVG, no script, nothing
//! fetched) with the headline figures, a venue × hour heat map of exposure coloured by score
//! with counts in the cells and a legend, and the delivery timeline of every gateway.
//!
//! Pure: a [`Report`] in, a string out; writing the file is [`super::run`]'s job. Every piece
//! of text from the report goes through [`escape`]; numbers are formatted here.

use super::report::{Report, VenueHourRow, Verdict, utc_minute};
use std::collections::HashMap;
use std::fmt::Write as _;

/// `text` with the five HTML-significant characters escaped, safe in element content and in
/// quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The heat map's colour for `t` in 0..=1 (share of the highest score): pale yellow, orange,
/// dark red.
fn heat(t: f64) -> String {
    const STOPS: [(f64, [f64; 3]); 3] = [
        (0.0, [255.0, 237.0, 160.0]),
        (0.5, [245.0, 137.0, 31.0]),
        (1.0, [165.0, 15.0, 21.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    let (a, b) = if t <= 0.5 {
        (STOPS[0], STOPS[1])
    } else {
        (STOPS[1], STOPS[2])
    };
    let u = (t - a.0) / (b.0 - a.0);
    let c: Vec<u8> = (0..3)
        .map(|i| (a.1[i] + (b.1[i] - a.1[i]) * u).round() as u8)
        .collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Colours of the gateways' lines in the cumulative delivery chart.
const LINE_COLOURS: [&str; 6] = [
    "#1b7837", "#2166ac", "#b2182b", "#762a83", "#e08214", "#4d4d4d",
];

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#1d2430}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5b6575;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d8dde5;border-radius:8px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:22px}.card span{color:#5b6575;font-size:12px}
.scroll{overflow-x:auto}
table.heatmap{border-collapse:separate;border-spacing:2px}
.heatmap th{font-weight:600;font-size:12px;color:#3b4452;padding:2px 4px;white-space:nowrap}
.heatmap th.venue{text-align:left}.heatmap th.venue small{display:block;color:#7a8494;font-weight:400}
.heatmap td{width:42px;height:38px;text-align:center;vertical-align:middle;background:#f1f3f6;border-radius:4px;font-weight:700;font-size:13px}
.heatmap td small{display:block;font-weight:400;font-size:10px}
.heatmap td.hot{color:#fff}
.heatmap td.missed{background:#fff;outline:2px dashed #b2182b;outline-offset:-3px;color:#b2182b;font-size:10px}
.heatmap td.extra::after{content:'\\2731';font-size:9px;vertical-align:super}
.legend{display:flex;flex-wrap:wrap;align-items:center;gap:16px;margin:10px 0;font-size:12px;color:#3b4452}
.ramp{width:180px;height:12px;border-radius:3px;background:linear-gradient(90deg,#ffeda0,#f5891f,#a50f15)}
.swatch{display:inline-block;width:18px;height:14px;border-radius:3px;vertical-align:middle;margin-right:4px;background:#f1f3f6}
.swatch.missed{background:#fff;outline:2px dashed #b2182b;outline-offset:-3px}
table.plain{border-collapse:collapse;font-size:13px}
.plain th,.plain td{border-bottom:1px solid #e3e7ed;padding:4px 10px;text-align:right}
.plain th:first-child,.plain td:first-child,.plain th:nth-child(2),.plain td:nth-child(2){text-align:left}
svg text{font:11px system-ui,sans-serif;fill:#3b4452}
footer{margin-top:28px;color:#7a8494;font-size:12px}
";

fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let venues: Vec<&str> = r.venues.iter().map(|v| v.id.as_str()).collect();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>venuetrace demo: venue exposure, {} venues</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<h1>venuetrace demo: which venues had an infectious visitor, and when</h1>\n\
         <p class=\"sub\">A simulated day: {} phones at {} venues ({}), {} h from {} UTC, {:.1} % \
         of the phones later diagnosed, seed {}. Gateways sealed their windows to the authority \
         over MQTT; the authority matched a key server's signed export of the diagnosed \
         phones' keys and counted the registered Wiqaytna cases from the TempIDs the gateways read. \
         Compared with the simulation's ground truth.</p>\n",
        r.venues.len(),
        r.phones,
        r.venues.len(),
        escape(&venues.join(", ")),
        r.hours,
        escape(&utc_minute(r.start_unix_s as i64)),
        r.infected_share * 100.0,
        r.seed
    );

    // Headline figures.
    let c = &r.exposed_venue_hours;
    let d = &r.delivery;
    let cards = [
        (
            fixed(r.recall, 3),
            format!(
                "recall: {} of {} exposed venue-hours found",
                c.found, c.truly_exposed
            ),
        ),
        (
            fixed(r.precision, 3),
            format!(
                "precision: {} false alarms in {} reported",
                c.false_alarms, c.reported
            ),
        ),
        (
            r.visitors
                .mean_relative_error
                .map_or_else(|| "n/a".to_owned(), |e| format!("{:.1} %", e * 100.0)),
            format!(
                "mean error of co-present visitor counts ({:.1} phones)",
                r.visitors.mean_absolute_error.unwrap_or(0.0)
            ),
        ),
        (
            format!(
                "{} / {}",
                r.bluetrace.venue_hours.found, r.bluetrace.venue_hours.truly_exposed
            ),
            format!(
                "Wiqaytna (BlueTrace) venue-hours with a case found, {} cases, {} false alarms",
                r.bluetrace.cases_registered, r.bluetrace.venue_hours.false_alarms
            ),
        ),
        (
            format!("{} / {}", d.delivered, d.sealed),
            "batches delivered / sealed".to_owned(),
        ),
        (d.lost.to_string(), "batches lost".to_owned()),
        (
            d.duplicates
                .map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
            "duplicate deliveries".to_owned(),
        ),
    ];
    h.push_str("<section class=\"cards\" id=\"figures\">\n");
    for (value, label) in cards {
        let _ = writeln!(
            h,
            "<div class=\"card\"><b>{}</b><span>{}</span></div>",
            escape(&value),
            escape(&label)
        );
    }
    h.push_str("</section>\n");

    heat_map(&mut h, r);
    timeline(&mut h, r);
    cumulative(&mut h, r);
    delivery_table(&mut h, r);

    let _ = write!(
        h,
        "<footer>Generated by <code>./scripts/demo</code> (venuetrace-demo). Scores are GAEN v2 \
         weighted seconds of exposure; co-present visitors are estimated from rotating \
         identifiers alone, without linking them. Times are UTC. No phone is identified \
         anywhere on this page.</footer>\n</body>\n</html>\n"
    );
    h
}

fn heat_map(h: &mut String, r: &Report) {
    let first_hour = (r.start_unix_s / 3600 * 3600) as i64;
    let end = r.end_unix_s as i64;
    let hours: Vec<i64> = (first_hour..end).step_by(3600).collect();
    let rows: HashMap<(&str, i64), &VenueHourRow> = r
        .venue_hours
        .iter()
        .map(|row| ((row.venue.as_str(), row.hour_start_unix_s), row))
        .collect();
    let max_score = r
        .venue_hours
        .iter()
        .map(|row| row.max_score)
        .fold(0.0_f64, f64::max);
    h.push_str(
        "<h2>Exposure by venue and hour (UTC)</h2>\n<div class=\"scroll\">\
         <table class=\"heatmap\" id=\"heatmap\">\n<thead><tr><th class=\"venue\">venue</th>",
    );
    for (i, hour) in hours.iter().enumerate() {
        let label = utc_minute(*hour);
        let short = if i == 0 || hour % 86_400 == 0 {
            label.get(5..13).unwrap_or(&label).replace(' ', "\u{a0}")
        } else {
            label.get(11..13).unwrap_or(&label).to_owned()
        };
        let _ = write!(
            h,
            "<th title=\"{}\">{}</th>",
            escape(&label),
            escape(&short)
        );
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for venue in &r.venues {
        let _ = write!(
            h,
            "<tr data-venue=\"{id}\"><th class=\"venue\" scope=\"row\">{id}<small>{kind}</small></th>",
            id = escape(&venue.id),
            kind = escape(&venue.kind)
        );
        for hour in &hours {
            let label = utc_minute(*hour);
            match rows.get(&(venue.id.as_str(), *hour)) {
                None => {
                    let _ = write!(
                        h,
                        "<td title=\"{} {}: no exposure\"></td>",
                        escape(&venue.id),
                        escape(&label)
                    );
                }
                Some(row) if row.verdict == Verdict::Missed => {
                    let _ = write!(
                        h,
                        "<td class=\"missed\" title=\"{} {}: an infected phone was there \
                         ({} co-present GAEN phones) but nothing was reported\">missed</td>",
                        escape(&venue.id),
                        escape(&label),
                        row.co_present_true.unwrap_or(0)
                    );
                }
                Some(row) => {
                    let t = if max_score > 0.0 {
                        row.max_score / max_score
                    } else {
                        0.0
                    };
                    let mut class = Vec::new();
                    if t > 0.55 {
                        class.push("hot");
                    }
                    if row.verdict == Verdict::FalseAlarm {
                        class.push("extra");
                    }
                    let truth = match row.co_present_true {
                        Some(n) => format!("{n} in truth"),
                        None => "no infected phone there in truth (false alarm)".to_owned(),
                    };
                    let _ = write!(
                        h,
                        "<td class=\"{}\" style=\"background:{}\" title=\"{} {}: {} exposure \
                         events, {} infectious keys, max score {:.0}, total {:.0}; co-present \
                         visitors ~{} estimated, {}\">{}<small>~{}</small></td>",
                        class.join(" "),
                        heat(t),
                        escape(&venue.id),
                        escape(&label),
                        row.exposure_events,
                        row.infectious_keys,
                        row.max_score,
                        row.total_score,
                        row.co_present_estimate.unwrap_or(0),
                        escape(&truth),
                        row.exposure_events,
                        row.co_present_estimate.unwrap_or(0)
                    );
                }
            }
        }
        h.push_str("</tr>\n");
    }
    let _ = write!(
        h,
        "</tbody></table></div>\n<div class=\"legend\" id=\"legend\">\
         <span>max exposure score 0</span><span class=\"ramp\"></span><span>{max_score:.0}</span>\
         <span><b>2</b> = exposure events, <b>~17</b> = estimated co-present visitors</span>\
         <span><span class=\"swatch\"></span>no exposure</span>\
         <span><span class=\"swatch missed\"></span>missed (infected phone present, not reported)</span>\
         <span>\u{2731} false alarm (reported, no infected phone there)</span></div>\n"
    );
}

fn timeline(h: &mut String, r: &Report) {
    let gateways = &r.delivery.gateways;
    let (start, end) = (
        r.start_unix_s as f64,
        r.end_unix_s.max(r.start_unix_s + 1) as f64,
    );
    let (left, width, row_h) = (150.0, 900.0, 44.0);
    let height = 30.0 + row_h * gateways.len() as f64;
    let x = |t: f64| left + (t - start) / (end - start) * width;
    let max_sightings = gateways
        .iter()
        .flat_map(|g| &g.timeline)
        .map(|p| p.sightings)
        .max()
        .unwrap_or(1)
        .max(1);
    let _ = write!(
        h,
        "<h2>Delivery timeline: every sealed window, by gateway</h2>\n<p class=\"sub\">One bar per \
         window the gateway sealed, placed at its simulated time, as tall as its number of \
         identifiers; green = stored by the authority. Hover for the seal-to-store delay.</p>\n\
         <div class=\"scroll\"><svg id=\"delivery-timeline\" xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" role=\"img\" \
         aria-label=\"delivery timeline\">\n",
        w = left + width + 20.0
    );
    let mut hour = (r.start_unix_s / 3600 * 3600) as f64;
    while hour < end {
        if hour >= start {
            let hx = x(hour);
            let _ = writeln!(
                h,
                "<line x1=\"{hx:.1}\" y1=\"16\" x2=\"{hx:.1}\" y2=\"{y2:.1}\" stroke=\"#e3e7ed\"/>\
                 <text x=\"{hx:.1}\" y=\"12\" text-anchor=\"middle\">{}</text>",
                escape(utc_minute(hour as i64).get(11..13).unwrap_or("")),
                y2 = height - 4.0
            );
        }
        hour += 3600.0;
    }
    for (i, g) in gateways.iter().enumerate() {
        let base = 20.0 + row_h * (i as f64 + 1.0) - 6.0;
        let _ = writeln!(
            h,
            "<text x=\"4\" y=\"{:.1}\">{} ({}/{})</text>",
            base - 10.0,
            escape(&g.venue),
            g.delivered,
            g.sealed
        );
        for p in &g.timeline {
            let x0 = x(p.window_start_unix_s as f64);
            let x1 = x((p.window_start_unix_s + i64::from(p.window_minutes) * 60) as f64);
            let bar = 2.0 + (row_h - 12.0) * p.sightings as f64 / max_sightings as f64;
            let delay = p.delay_ms.map_or_else(
                || "delay unknown".to_owned(),
                |d| format!("stored {d} ms after sealing"),
            );
            let _ = writeln!(
                h,
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" fill=\"#2a9d8f\">\
                 <title>{} window {} UTC (batch {}): {} identifiers, {}, at +{:.1} s</title></rect>",
                base - bar,
                (x1 - x0 - 1.0).max(1.0),
                escape(&g.gateway),
                escape(&utc_minute(p.window_start_unix_s)),
                p.sequence,
                p.sightings,
                escape(&delay),
                p.stored_after_ms as f64 / 1000.0
            );
        }
        if g.lost > 0 {
            let missing: Vec<String> = g.missing.iter().map(u64::to_string).collect();
            let _ = writeln!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#b2182b\">lost batches: {}</text>",
                left,
                base - 10.0,
                escape(&missing.join(", "))
            );
        }
    }
    h.push_str("</svg></div>\n");
}

fn cumulative(h: &mut String, r: &Report) {
    let gateways = &r.delivery.gateways;
    let span_ms = gateways
        .iter()
        .flat_map(|g| &g.timeline)
        .map(|p| p.stored_after_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let most = gateways.iter().map(|g| g.sealed).max().unwrap_or(0).max(1) as f64;
    let (left, top, width, height) = (50.0, 10.0, 600.0, 180.0);
    let _ = write!(
        h,
        "<h2>Deliveries over the run (wall clock)</h2>\n<svg id=\"delivery-cumulative\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hh}\" viewBox=\"0 0 {w} {hh}\" \
         role=\"img\" aria-label=\"batches stored over time\">\n\
         <line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"#7a8494\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"#7a8494\"/>\
         <text x=\"{left}\" y=\"{label_y}\">0 s</text>\
         <text x=\"{right}\" y=\"{label_y}\" text-anchor=\"end\">{secs:.1} s after the gateways started</text>\
         <text x=\"{ax}\" y=\"{ty}\" text-anchor=\"end\">{most:.0}</text>\
         <text x=\"{ax}\" y=\"{bottom}\" text-anchor=\"end\">0</text>\n",
        w = left + width + 240.0,
        hh = top + height + 40.0,
        bottom = top + height,
        right = left + width,
        label_y = top + height + 16.0,
        secs = span_ms / 1000.0,
        ax = left - 6.0,
        ty = top + 8.0,
    );
    for (i, g) in gateways.iter().enumerate() {
        let colour = LINE_COLOURS[i % LINE_COLOURS.len()];
        let mut times: Vec<i64> = g.timeline.iter().map(|p| p.stored_after_ms).collect();
        times.sort_unstable();
        let mut points = vec![format!("{left:.1},{:.1}", top + height)];
        for (n, t) in times.iter().enumerate() {
            let px = left + (*t).max(0) as f64 / span_ms * width;
            let py = top + height - (n as f64 + 1.0) / most * height;
            points.push(format!("{px:.1},{py:.1}"));
        }
        let _ = writeln!(
            h,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <rect x=\"{lx}\" y=\"{ly:.1}\" width=\"12\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\">{} ({} batches)</text>",
            points.join(" "),
            escape(&g.venue),
            times.len(),
            lx = left + width + 12.0,
            ly = top + 10.0 + 18.0 * i as f64,
            tx = left + width + 30.0,
            ty = top + 14.0 + 18.0 * i as f64,
        );
    }
    h.push_str("</svg>\n");
}

fn delivery_table(h: &mut String, r: &Report) {
    let d = &r.delivery;
    let ms = |v: Option<i64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v} ms"));
    h.push_str(
        "<h2>Delivery figures</h2>\n<table class=\"plain\" id=\"delivery\"><thead><tr>\
         <th>gateway</th><th>venue</th><th>adverts</th><th>sealed</th><th>delivered</th>\
         <th>lost</th><th>left in outbox</th><th>median delay</th><th>max delay</th></tr>\
         </thead><tbody>\n",
    );
    for g in &d.gateways {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&g.gateway),
            escape(&g.venue),
            g.adverts
                .map_or_else(|| "n/a".to_owned(), |a| a.to_string()),
            g.sealed,
            g.delivered,
            g.lost,
            g.left_in_outbox,
            ms(g.median_delay_ms),
            ms(g.max_delay_ms)
        );
    }
    let _ = writeln!(
        h,
        "<tr><td><b>total</b></td><td></td><td></td><td><b>{}</b></td><td><b>{}</b></td>\
         <td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td></tr></tbody></table>\n\
         <p class=\"sub\">{} duplicate deliveries, {} quarantined.</p>",
        d.sealed,
        d.delivered,
        d.lost,
        d.left_in_outbox,
        ms(d.median_delay_ms),
        ms(d.max_delay_ms),
        d.duplicates
            .map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
        d.quarantined
    );
}

#[cfg(test)]
mod tests {
    use super::super::report::{Confusion, Delivery, Keys, Population, VenueSummary};
    use super::*;

    /// All five HTML-significant characters are escaped; other text is left alone.
    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<script>alert("x&y")</script> 'souk' é"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt; &#39;souk&#39; é"
        );
    }

    /// The colour ramp runs from pale yellow to dark red and clamps.
    #[test]
    fn heat_ramp() {
        assert_eq!(heat(0.0), "#ffeda0");
        assert_eq!(heat(0.5), "#f5891f");
        assert_eq!(heat(1.0), "#a50f15");
        assert_eq!(heat(7.0), heat(1.0));
    }

    fn report(venue: &str) -> Report {
        let start = 1_748_844_000;
        Report {
            seed: 1,
            phones: 10,
            hours: 2.0,
            infected_share: 0.1,
            start_unix_s: start,
            end_unix_s: start + 7200,
            timezone: "UTC",
            venues: vec![VenueSummary {
                id: venue.into(),
                kind: "souk".into(),
                visits: 3,
                visitors: 2,
            }],
            population: Population {
                phones: 10,
                gaen: 7,
                bluetrace: 3,
                diagnosed: 1,
                diagnosed_gaen: 1,
                visits: 3,
                multi_venue_phones: 0,
                arrivals_without_free_phone: 0,
            },
            keys: Keys {
                exported: 1,
                imported: Some(1),
            },
            recall: Some(1.0),
            precision: Some(1.0),
            exposed_venue_hours: Confusion::default(),
            visitors: Default::default(),
            delivery: Delivery::default(),
            venue_hours: vec![VenueHourRow {
                venue: venue.into(),
                kind: "souk".into(),
                hour: utc_minute(start as i64),
                hour_start_unix_s: start as i64,
                verdict: Verdict::Found,
                exposure_events: 3,
                infectious_keys: 1,
                max_score: 1234.0,
                total_score: 2000.0,
                co_present_estimate: Some(17),
                co_present_true: Some(15),
                co_present_all: Some(20),
                infected_phones: Some(1),
            }],
            bluetrace: Default::default(),
            timings: Vec::new(),
            html: None,
        }
    }

    /// The page carries the heat map with one row per venue and one column per hour, the
    /// exposed cell with its counts and colour, the legend and both charts; a hostile venue
    /// name is escaped everywhere; nothing is loaded from elsewhere.
    #[test]
    fn page_shows_the_heat_map_and_escapes_names() {
        let page = render(&report("souk-1"));
        assert!(page.contains("<table class=\"heatmap\" id=\"heatmap\">"));
        assert!(page.contains("<tr data-venue=\"souk-1\">"));
        let heat_map = page
            .split("id=\"heatmap\"")
            .nth(1)
            .and_then(|rest| rest.split("</table>").next())
            .expect("heat map table");
        assert_eq!(heat_map.matches("<td").count(), 2, "two hours, one venue");
        assert!(page.contains(">3<small>~17</small></td>"));
        assert!(page.contains("style=\"background:#a50f15\""));
        for id in [
            "id=\"legend\"",
            "id=\"delivery-timeline\"",
            "id=\"delivery-cumulative\"",
        ] {
            assert!(page.contains(id), "{id}");
        }
        assert!(!page.contains("<script"));
        assert!(!page.contains("src="));
        // The only URL is the SVG namespace, which is a name, not a fetch.
        assert!(
            !page
                .replace("http://www.w3.org/2000/svg", "")
                .contains("://")
        );
        let hostile = render(&report("<img src=x onerror=alert(1)>"));
        assert!(!hostile.contains("<img"));
        assert!(hostile.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }
}
