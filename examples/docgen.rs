//! Generates the man pages and shell completions of both binaries from their CLI definitions
//! (`venuetrace::gateway::command()`, `venuetrace::authority::cli::command()`), so the
//! documentation installed by the Debian packages is exactly what `--help` says.
//!
//! Run: `cargo run --release --example docgen -- OUT_DIR` (debian/rules does, into
//! `debian/generated`). Writes:
//!
//! - `OUT_DIR/man/venuetrace-gateway.1`, `venuetrace-gateway-run.1`, ... one page per command
//!   and subcommand (clap_mangen). The two top-level pages also get the sections `--help` has
//!   no room for: ENVIRONMENT, FILES, EXIT STATUS, SEE ALSO.
//! - `OUT_DIR/completions/bash/NAME`, `OUT_DIR/completions/zsh/_NAME`,
//!   `OUT_DIR/completions/fish/NAME.fish` (clap_complete), named as each shell's completion
//!   directory expects them.
//!
//! The page date is taken from `SOURCE_DATE_EPOCH` (dpkg sets it from debian/changelog) so
//! builds are reproducible; without it the pages carry no date.
//!
//! The installation paths are left to the packaging (`debian/*.install`, `debian/*.manpages`).

use clap_complete::Shell;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What one binary's top-level man page adds to what clap knows.
struct Extra {
    /// The binary's name.
    name: &'static str,
    /// Environment variables the program reads: (variable, meaning).
    environment: &'static [(&'static str, &'static str)],
    /// Files the program uses: (path, meaning).
    files: &'static [(&'static str, &'static str)],
    /// Other pages: `name(section)`.
    see_also: &'static [&'static str],
}

/// The footer's source: the package and its version (subcommands have no version of their own).
const SOURCE: &str = concat!("venuetrace ", env!("CARGO_PKG_VERSION"));

/// The footer's manual name.
const MANUAL: &str = "venuetrace manual";

/// The exit codes both binaries share (`src/exit.rs`, README.md).
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Success (also --help and --version)."),
    ("64", "Usage: a bad option or value."),
    ("65", "Bad data: malformed, forged or unverified input."),
    ("66", "An input file is missing or unreadable."),
    (
        "69",
        "A component the command needs is not available (broker, bus, adapter).",
    ),
    ("70", "Internal error (a bug: please report it)."),
    (
        "73",
        "A file that must be new cannot be created (e.g. keygen over an existing key).",
    ),
    ("74", "I/O error while reading or writing."),
    ("75", "Temporary failure: trying again later may work."),
    (
        "78",
        "The configuration or key material is invalid; every problem is listed.",
    ),
];

const GATEWAY: Extra = Extra {
    name: "venuetrace-gateway",
    environment: &[
        (
            "VENUETRACE_GATEWAY__SECTION__KEY",
            "Overrides a key of the configuration file, e.g. VENUETRACE_GATEWAY__MQTT__PORT=8883.",
        ),
        (
            "CREDENTIALS_DIRECTORY",
            "Set by systemd (LoadCredential=): the private key is read from gateway.key in it.",
        ),
        (
            "JOURNAL_STREAM",
            "Set by systemd: records go to the journal natively, with priorities and fields.",
        ),
        (
            "RUST_LOG",
            "Overrides log.level for one run (tracing filter syntax).",
        ),
    ],
    files: &[
        (
            "/etc/venuetrace/gateway.toml",
            "The configuration: every key, commented, with its default.",
        ),
        (
            "/var/lib/venuetrace-gateway/gateway.key",
            "The gateway's X25519 private key (created by keygen, or by the package).",
        ),
        (
            "/var/lib/venuetrace-gateway/outbox.sqlite",
            "Sealed batches waiting for the authority's receipt.",
        ),
        (
            "/usr/share/doc/venuetrace-gateway/operations.md",
            "Install, enroll, rotate keys, status, upgrade, log messages.",
        ),
    ],
    see_also: &[
        "venuetrace-authority(1)",
        "systemctl(1)",
        "journalctl(1)",
        "busctl(1)",
        "systemd.exec(5)",
    ],
};

const AUTHORITY: Extra = Extra {
    name: "venuetrace-authority",
    environment: &[
        (
            "VENUETRACE_AUTHORITY__SECTION__KEY",
            "Overrides a key of the configuration file, e.g. VENUETRACE_AUTHORITY__MQTT__PORT=8883.",
        ),
        (
            "CREDENTIALS_DIRECTORY",
            "Set by systemd (LoadCredential=): the private key is read from authority.key in it.",
        ),
        (
            "JOURNAL_STREAM",
            "Set by systemd: records go to the journal natively, with priorities and fields.",
        ),
        (
            "RUST_LOG",
            "Overrides log.level for one run (tracing filter syntax).",
        ),
    ],
    files: &[
        (
            "/etc/venuetrace/authority.toml",
            "The configuration: every key, commented, with its default.",
        ),
        (
            "/var/lib/venuetrace-authority/authority.key",
            "The authority's X25519 private key, that gateways seal batches to.",
        ),
        (
            "/var/lib/venuetrace-authority/authority.sqlite",
            "The store: gateways, venues, batches, sightings, keys, exposures.",
        ),
        (
            "/usr/share/doc/venuetrace-authority/operations.md",
            "Install, enroll gateways, back up, upgrade, log messages.",
        ),
    ],
    see_also: &[
        "venuetrace-gateway(1)",
        "mosquitto(8)",
        "systemctl(1)",
        "journalctl(1)",
        "sqlite3(1)",
    ],
};

/// Escapes text for roff: backslashes, and a leading dot or apostrophe that would read as a
/// request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// A section of tagged paragraphs (`.TP`).
fn tagged_section(out: &mut dyn Write, title: &str, items: &[(&str, &str)]) -> std::io::Result<()> {
    writeln!(out, ".SH {title}")?;
    for (tag, text) in items {
        writeln!(out, ".TP\n\\fB{}\\fR\n{}", roff(tag), roff(text))?;
    }
    Ok(())
}

/// The top-level page of one binary: clap's sections, then the extra ones.
fn top_page(cmd: clap::Command, extra: &Extra, date: &str, dir: &Path) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd)
        .date(date)
        .source(SOURCE)
        .manual(MANUAL);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    tagged_section(&mut out, "ENVIRONMENT", extra.environment)?;
    tagged_section(&mut out, "FILES", extra.files)?;
    tagged_section(&mut out, "EXIT STATUS", EXIT_STATUS)?;
    writeln!(out, ".SH \"SEE ALSO\"")?;
    let refs: Vec<String> = extra
        .see_also
        .iter()
        .map(|r| match r.split_once('(') {
            Some((page, section)) => format!("\\fB{}\\fR({section}", roff(page)),
            None => roff(r),
        })
        .collect();
    writeln!(out, "{}", refs.join(",\n"))?;
    man.render_version_section(&mut out)?;
    std::fs::write(dir.join(format!("{}.1", extra.name)), out)
}

/// Every subcommand's page (`venuetrace-gateway-run.1`, ...), recursively.
fn sub_pages(cmd: &clap::Command, date: &str, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        sub_pages(sub, date, dir)?;
        clap_mangen::Man::new(sub.clone())
            .date(date)
            .source(SOURCE)
            .manual(MANUAL)
            .generate_to(dir)?;
    }
    Ok(())
}

/// The completion scripts of one binary for bash, zsh and fish.
fn completions(cmd: &clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.to_owned()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let shell_dir = dir.join(sub);
        std::fs::create_dir_all(&shell_dir)?;
        let mut out = std::fs::File::create(shell_dir.join(file))?;
        clap_complete::generate(shell, &mut cmd.clone(), name, &mut out);
        out.flush()?;
    }
    Ok(())
}

/// `YYYY-MM-DD` of `SOURCE_DATE_EPOCH`, or empty.
fn page_date() -> String {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn generate(out: &Path) -> std::io::Result<()> {
    let man_dir = out.join("man");
    let completion_dir = out.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completion_dir)?;
    let date = page_date();
    for (cmd, extra) in [
        (venuetrace::gateway::command(), &GATEWAY),
        (venuetrace::authority::cli::command(), &AUTHORITY),
    ] {
        // Built once so subcommands carry their display names ("venuetrace-gateway-run"),
        // which name their pages.
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        sub_pages(&cmd, &date, &man_dir)?;
        completions(&cmd, extra.name, &completion_dir)?;
        top_page(cmd, extra, &date, &man_dir)?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: docgen OUT_DIR");
        return std::process::ExitCode::from(64);
    };
    let out = PathBuf::from(out);
    match generate(&out) {
        Ok(()) => {
            println!("man pages and completions written to {}", out.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docgen: cannot write to {}: {e}", out.display());
            std::process::ExitCode::from(74)
        }
    }
}
