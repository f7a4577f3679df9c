//! The strict-configuration machinery both daemons share: a schema of typed keys with defaults,
//! a walker that checks a TOML file and `PREFIX__SECTION__KEY` environment overrides against
//! it, and the problem types that report everything wrong at once, each with its source (the
//! file, or the variable) and key path.
//!
//! Also here: the settings both configurations have in common, with their checks — the MQTT
//! connection (`[mqtt]`: broker, TLS, credentials) and logging (`[log]`).
//!
//! What each daemon's keys are, what they mean and how they combine is left to
//! [`crate::gateway::config`] and [`crate::authority::config`]: each declares a `Schema` and
//! builds its typed configuration from a `Loader` with the accessors below.
//!
//! Why not a serde derive: it stops at the first problem and cannot say which environment
//! variable a value came from. Why not `config::Environment`: it guesses each value's type
//! before knowing the key (a password of `0123` would become the integer 123). Environment
//! values are parsed here as the key's type; lists are comma-separated.
//!
//! Keys may sit one table deeper than their section (`matching.report_type_weights.self_report`):
//! the schema names them with a dot, the file writes them as an inline table or a
//! `[section.table]` header, the environment as `PREFIX__SECTION__TABLE__KEY`.

use config::{FileFormat, Source, Value, ValueKind};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Problems.

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where the value came from: the file's path, or the environment variable's name.
    pub source: String,
    /// The key path (`mqtt.port`), empty for problems with the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.message)
        }
    }
}

/// Every problem found in a configuration; displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems, in the order found (file, then environment, then cross-checks).
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The process environment as the configurations' `load` functions take it. Variables whose
/// name is not UTF-8 are skipped (none of ours is); values that are not UTF-8 are converted
/// lossily, so a broken value of one of ours is reported rather than ignored.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            let value = value.to_string_lossy().into_owned();
            Some((name, value))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Settings both configurations share.

/// Where an MQTT password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MqttPassword {
    /// Given in the configuration.
    Inline(Secret),
    /// Read from this file (trailing newline removed) when connecting.
    File(PathBuf),
}

/// A secret string: `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// TLS to the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA certificates to trust; `None` = the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS, if any.
    pub client_auth: Option<ClientAuth>,
}

/// A client certificate and its key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    /// The certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// `[log]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Most verbose level logged.
    pub level: LogLevel,
    /// Output format.
    pub format: LogFormat,
}

/// `log.level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// `"error"`.
    Error,
    /// `"warn"`.
    Warn,
    /// `"info"`.
    Info,
    /// `"debug"`.
    Debug,
    /// `"trace"` (the only level at which secrets may appear, DESIGN.md §3.5).
    Trace,
}

impl LogLevel {
    /// The name used in the file and by `tracing` filters.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// `log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `"text"`: one human-readable line per event (journald adds the time).
    Text,
    /// `"json"`: one JSON object per event.
    Json,
}

impl LogFormat {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The values of `log.level`, for schemas.
pub(crate) const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// The values of `log.format`, for schemas.
pub(crate) const LOG_FORMATS: &[&str] = &["text", "json"];

/// The `[mqtt]` keys both daemons have: how to reach and authenticate to the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MqttConnection {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) client_id: String,
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<MqttPassword>,
    pub(crate) keep_alive: Duration,
}

// ---------------------------------------------------------------------------------------------
// The schema.

/// A daemon's configuration schema.
#[derive(Debug)]
pub(crate) struct Schema {
    /// The sections of the file, in documentation order.
    pub(crate) sections: &'static [&'static str],
    /// Every key, with its type and default.
    pub(crate) keys: &'static [KeySpec],
    /// Prefix of the environment variables that override settings (`VENUETRACE_GATEWAY__`).
    pub(crate) env_prefix: &'static str,
}

impl Schema {
    fn find(&self, section: &str, key: &str) -> Option<&'static KeySpec> {
        self.keys
            .iter()
            .find(|s| s.section == section && s.key == key)
    }

    /// Whether `section.table` is a table of keys (some key is named `table.something`).
    fn is_table(&self, section: &str, table: &str) -> bool {
        self.keys.iter().any(|s| {
            s.section == section
                && s.key
                    .split_once('.')
                    .is_some_and(|(first, _)| first == table)
        })
    }

    /// The names a section's table holds directly: its keys and sub-tables (`table` = "") or a
    /// sub-table's keys.
    fn names_in<'a>(
        &'a self,
        section: &'a str,
        table: &'a str,
    ) -> impl Iterator<Item = &'static str> + 'a {
        self.keys
            .iter()
            .filter(move |s| s.section == section)
            .filter_map(move |s| {
                if table.is_empty() {
                    s.key.split('.').next()
                } else {
                    s.key
                        .split_once('.')
                        .filter(|(first, _)| *first == table)
                        .map(|(_, rest)| rest)
                }
            })
    }
}

/// The type (and range) of a key's value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// Any string; its meaning is checked when building the typed configuration.
    Str,
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// An integer valid by a rule of its own; `expected` says what a valid value looks like and
    /// `rule` gives the whole message for an invalid one.
    IntRule {
        expected: &'static str,
        rule: fn(i64) -> Result<(), String>,
    },
    /// A finite number above `min` (or at it, if `min_inclusive`) and at most `max`. TOML
    /// integers are accepted too.
    Float {
        min: f64,
        min_inclusive: bool,
        max: f64,
    },
    /// `true` or `false`.
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A list of strings (comma-separated in an environment variable).
    StrList,
    /// A list of exactly `len` integers, each in `min..=max`.
    IntList { len: usize, min: i64, max: i64 },
    /// A list of exactly `len` finite numbers, each in `min..=max` (integers accepted).
    FloatList { len: usize, min: f64, max: f64 },
}

impl Kind {
    /// What a valid value looks like, for messages.
    pub(crate) fn expected(self) -> String {
        match self {
            Kind::Str => "a string".into(),
            Kind::Int { min, max } => format!("an integer {min}..={max}"),
            Kind::IntRule { expected, .. } => expected.into(),
            Kind::Float {
                min,
                min_inclusive,
                max,
            } => format!(
                "a number {} {min} and <= {max}",
                if min_inclusive { ">=" } else { ">" }
            ),
            Kind::Bool => "true or false".into(),
            Kind::OneOf(names) => format!(
                "one of {}",
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::StrList => "a list of strings".into(),
            Kind::IntList { len, min, max } => format!("a list of {len} integers {min}..={max}"),
            Kind::FloatList { len, min, max } => {
                format!("a list of {len} numbers >= {min} and <= {max}")
            }
        }
    }
}

/// A key's value when the file does not set it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Preset {
    /// No default: the key must be set.
    Required,
    Str(&'static str),
    Int(i64),
    Float(f64),
    Bool(bool),
    StrList(&'static [&'static str]),
    IntList(&'static [i64]),
    FloatList(&'static [f64]),
}

/// One key of a schema.
#[derive(Debug)]
pub(crate) struct KeySpec {
    pub(crate) section: &'static str,
    /// The key; `table.key` for a key of a table inside the section.
    pub(crate) key: &'static str,
    pub(crate) kind: Kind,
    pub(crate) preset: Preset,
    /// Never echo the value in messages.
    pub(crate) secret: bool,
}

impl KeySpec {
    /// `section.key`, as problems name it.
    fn path(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
}

/// A key that is not secret.
pub(crate) const fn spec(
    section: &'static str,
    key: &'static str,
    kind: Kind,
    preset: Preset,
) -> KeySpec {
    KeySpec {
        section,
        key,
        kind,
        preset,
        secret: false,
    }
}

/// An integer in `min..=max`.
pub(crate) const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

/// A number in `min..=max`.
pub(crate) const fn float(min: f64, max: f64) -> Kind {
    Kind::Float {
        min,
        min_inclusive: true,
        max,
    }
}

// ---------------------------------------------------------------------------------------------
// Walking the file and the environment against the schema.

/// A value that passed its key's type and range check.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Raw {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
    IntList(Vec<i64>),
    FloatList(Vec<f64>),
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Default,
    File,
    Env(String),
}

#[derive(Debug)]
struct Setting {
    raw: Raw,
    origin: Origin,
}

type KeyId = (&'static str, &'static str);

/// Reads the file at `path`, applies the overrides in `env`, checks every key against `schema`,
/// then lets `build` turn the settings into a typed configuration (reporting its own problems
/// through the [`Loader`]). The typed configuration, or every problem found.
pub(crate) fn load<T>(
    path: &Path,
    env: &[(String, String)],
    schema: &'static Schema,
    build: impl FnOnce(&mut Loader) -> Option<T>,
) -> Result<T, ConfigErrors> {
    let file = path.display().to_string();
    let whole_file = |message: String| ConfigErrors {
        problems: vec![ConfigProblem {
            source: file.clone(),
            key: String::new(),
            message,
        }],
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| whole_file(format!("cannot read the configuration file: {e}")))?;
    load_text(path, &text, env, schema, build)
}

/// [`load`] on configuration text already in hand; `path` names it in messages (and is what
/// `build` resolves relative paths against). Empty text gives every default.
pub(crate) fn load_text<T>(
    path: &Path,
    text: &str,
    env: &[(String, String)],
    schema: &'static Schema,
    build: impl FnOnce(&mut Loader) -> Option<T>,
) -> Result<T, ConfigErrors> {
    let file = path.display().to_string();
    let whole_file = |message: String| ConfigErrors {
        problems: vec![ConfigProblem {
            source: file.clone(),
            key: String::new(),
            message,
        }],
    };
    let tree = config::File::from_str(text, FileFormat::Toml)
        .collect()
        .map_err(|e| whole_file(format!("not valid TOML: {e}")))?;
    let mut loader = Loader::new(file.clone(), schema);
    loader.walk_file(&tree);
    loader.walk_env(env);
    loader.check_required();
    let config = build(&mut loader);
    match config {
        Some(config) if loader.problems.is_empty() => Ok(config),
        _ => {
            if loader.problems.is_empty() {
                // `build` gives `None` only after recording why; keep that promise visible.
                loader.problem(
                    &Origin::File,
                    "",
                    "internal error: a setting is missing without a reported problem".into(),
                );
            }
            Err(ConfigErrors {
                problems: loader.problems,
            })
        }
    }
}

/// Collects settings (defaults, then the file, then the environment) and problems, and gives
/// the effective values to the code that builds a typed configuration.
///
/// The accessors return `None` for a key whose value was missing or invalid (already
/// reported), so builders combine them with `?` only after every check has run.
pub(crate) struct Loader {
    schema: &'static Schema,
    /// The file, as problems name it.
    file: String,
    settings: BTreeMap<KeyId, Setting>,
    /// Keys whose effective value was invalid (already reported): no further checks.
    broken: BTreeSet<KeyId>,
    overrides: Vec<String>,
    problems: Vec<ConfigProblem>,
}

impl Loader {
    fn new(file: String, schema: &'static Schema) -> Self {
        let settings = schema
            .keys
            .iter()
            .filter_map(|spec| {
                let raw = match spec.preset {
                    Preset::Required => return None,
                    Preset::Str(s) => Raw::Str(s.to_owned()),
                    Preset::Int(i) => Raw::Int(i),
                    Preset::Float(x) => Raw::Float(x),
                    Preset::Bool(b) => Raw::Bool(b),
                    Preset::StrList(items) => {
                        Raw::List(items.iter().map(|s| (*s).to_owned()).collect())
                    }
                    Preset::IntList(items) => Raw::IntList(items.to_vec()),
                    Preset::FloatList(items) => Raw::FloatList(items.to_vec()),
                };
                let origin = Origin::Default;
                Some(((spec.section, spec.key), Setting { raw, origin }))
            })
            .collect();
        Self {
            schema,
            file,
            settings,
            broken: BTreeSet::new(),
            overrides: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Environment variables that overrode a setting, by name, sorted.
    pub(crate) fn overrides(&self) -> &[String] {
        &self.overrides
    }

    fn problem(&mut self, origin: &Origin, key: &str, message: String) {
        let source = match origin {
            Origin::Env(name) => name.clone(),
            Origin::Default | Origin::File => self.file.clone(),
        };
        self.problems.push(ConfigProblem {
            source,
            key: key.to_owned(),
            message,
        });
    }

    fn set(&mut self, spec: &'static KeySpec, raw: Raw, origin: Origin) {
        let id = (spec.section, spec.key);
        self.broken.remove(&id);
        self.settings.insert(id, Setting { raw, origin });
    }

    fn invalid(&mut self, spec: &'static KeySpec, origin: Origin, message: String) {
        let id = (spec.section, spec.key);
        self.problem(&origin, &spec.path(), message);
        self.settings.remove(&id);
        self.broken.insert(id);
    }

    fn walk_file(&mut self, tree: &config::Map<String, Value>) {
        let schema = self.schema;
        let mut sections: Vec<(&String, &Value)> = tree.iter().collect();
        sections.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in sections {
            let Some(section) = schema.sections.iter().copied().find(|s| s == name) else {
                let message = match schema.keys.iter().find(|s| s.key == name) {
                    // A key written above every section header.
                    Some(spec) => format!(
                        "unknown section: {name:?} is a key of [{}], write it under that header",
                        spec.section
                    ),
                    None => format!(
                        "unknown section{}",
                        did_you_mean(name, schema.sections.iter().copied())
                    ),
                };
                self.problem(&Origin::File, name, message);
                continue;
            };
            let ValueKind::Table(table) = &value.kind else {
                self.problem(
                    &Origin::File,
                    name,
                    format!("expected a table ([{name}]), found {}", describe(value)),
                );
                continue;
            };
            self.walk_table(section, "", table);
        }
    }

    /// Checks the keys of `section`'s table (`table` = "") or of one of its sub-tables.
    fn walk_table(
        &mut self,
        section: &'static str,
        table: &str,
        values: &config::Map<String, Value>,
    ) {
        let schema = self.schema;
        let mut keys: Vec<(&String, &Value)> = values.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in keys {
            let name = if table.is_empty() {
                key.clone()
            } else {
                format!("{table}.{key}")
            };
            if table.is_empty() && schema.is_table(section, key) {
                match &value.kind {
                    ValueKind::Table(sub) => self.walk_table(section, key, sub),
                    _ => self.problem(
                        &Origin::File,
                        &format!("{section}.{key}"),
                        format!(
                            "expected a table of {}, found {}",
                            schema
                                .names_in(section, key)
                                .map(|n| format!("{n:?}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                            describe(value)
                        ),
                    ),
                }
                continue;
            }
            let Some(spec) = schema.find(section, &name) else {
                let hint = did_you_mean(key, schema.names_in(section, table));
                self.problem(
                    &Origin::File,
                    &format!("{section}.{name}"),
                    format!("unknown key{hint}"),
                );
                continue;
            };
            match from_toml(spec, value) {
                Ok(raw) => self.set(spec, raw, Origin::File),
                Err(message) => self.invalid(spec, Origin::File, message),
            }
        }
    }

    fn walk_env(&mut self, env: &[(String, String)]) {
        let schema = self.schema;
        let prefix = schema.env_prefix;
        let mut vars: Vec<&(String, String)> = env
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .collect();
        vars.sort();
        for (name, text) in vars {
            let origin = Origin::Env(name.clone());
            let parts: Vec<String> = name[prefix.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            let path = parts.join(".");
            let shape_ok = match parts.as_slice() {
                [_, _] => true,
                [section, table, _] => schema.is_table(section, table),
                _ => false,
            };
            if !shape_ok {
                self.problem(
                    &origin,
                    &path,
                    format!("not a setting: expected {prefix}SECTION__KEY"),
                );
                continue;
            }
            let section = &parts[0];
            let key = parts[1..].join(".");
            if !schema.sections.contains(&section.as_str()) {
                let hint = did_you_mean(section, schema.sections.iter().copied());
                self.problem(&origin, section, format!("unknown section{hint}"));
                continue;
            }
            let Some(spec) = schema.find(section, &key) else {
                let message = if parts.len() == 2 && schema.is_table(section, &key) {
                    format!(
                        "a table: set each of its keys as {name}__KEY, KEY one of {}",
                        schema
                            .names_in(section, &key)
                            .map(str::to_ascii_uppercase)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    let table = if parts.len() == 3 { &parts[1] } else { "" };
                    let last = &parts[parts.len() - 1];
                    format!(
                        "unknown key{}",
                        did_you_mean(last, schema.names_in(section, table))
                    )
                };
                self.problem(&origin, &path, message);
                continue;
            };
            match from_env(spec, text) {
                Ok(raw) => {
                    self.set(spec, raw, origin);
                    self.overrides.push(name.clone());
                }
                Err(message) => self.invalid(spec, origin, message),
            }
        }
    }

    fn check_required(&mut self) {
        for spec in self.schema.keys {
            let id = (spec.section, spec.key);
            if matches!(spec.preset, Preset::Required)
                && !self.settings.contains_key(&id)
                && !self.broken.contains(&id)
            {
                self.problem(
                    &Origin::File,
                    &spec.path(),
                    "missing: this key is required".into(),
                );
            }
        }
    }

    /// Reports a problem with the effective value of `section.key`, naming where it came from.
    pub(crate) fn problem_at(&mut self, section: &'static str, key: &'static str, message: String) {
        let origin = self
            .settings
            .get(&(section, key))
            .map_or(Origin::File, |s| s.origin.clone());
        self.problem(&origin, &format!("{section}.{key}"), message);
        self.broken.insert((section, key));
    }

    /// Like [`problem_at`](Self::problem_at), naming one item of a list: `section.key[index]`.
    pub(crate) fn problem_at_item(
        &mut self,
        section: &'static str,
        key: &'static str,
        index: usize,
        message: String,
    ) {
        let origin = self
            .settings
            .get(&(section, key))
            .map_or(Origin::File, |s| s.origin.clone());
        self.problem(&origin, &format!("{section}.{key}[{index}]"), message);
        self.broken.insert((section, key));
    }

    fn raw(&self, section: &'static str, key: &'static str) -> Option<&Raw> {
        self.settings.get(&(section, key)).map(|s| &s.raw)
    }

    /// A string setting.
    pub(crate) fn string(&self, section: &'static str, key: &'static str) -> Option<String> {
        match self.raw(section, key) {
            Some(Raw::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// An integer setting.
    pub(crate) fn int(&self, section: &'static str, key: &'static str) -> Option<i64> {
        match self.raw(section, key) {
            Some(Raw::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// A number setting.
    pub(crate) fn float(&self, section: &'static str, key: &'static str) -> Option<f64> {
        match self.raw(section, key) {
            Some(Raw::Float(x)) => Some(*x),
            _ => None,
        }
    }

    /// A boolean setting.
    pub(crate) fn boolean(&self, section: &'static str, key: &'static str) -> Option<bool> {
        match self.raw(section, key) {
            Some(Raw::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// A list-of-strings setting.
    pub(crate) fn list(&self, section: &'static str, key: &'static str) -> Option<Vec<String>> {
        match self.raw(section, key) {
            Some(Raw::List(items)) => Some(items.clone()),
            _ => None,
        }
    }

    /// A list-of-integers setting.
    pub(crate) fn int_list(&self, section: &'static str, key: &'static str) -> Option<Vec<i64>> {
        match self.raw(section, key) {
            Some(Raw::IntList(items)) => Some(items.clone()),
            _ => None,
        }
    }

    /// A list-of-numbers setting.
    pub(crate) fn float_list(&self, section: &'static str, key: &'static str) -> Option<Vec<f64>> {
        match self.raw(section, key) {
            Some(Raw::FloatList(items)) => Some(items.clone()),
            _ => None,
        }
    }

    /// Whether `section.key` was set by the file or the environment (not left at its default).
    pub(crate) fn is_set(&self, section: &'static str, key: &'static str) -> bool {
        self.settings
            .get(&(section, key))
            .is_some_and(|s| s.origin != Origin::Default)
    }

    /// A string that must not be empty; `Some("")` never comes back.
    pub(crate) fn non_empty(&mut self, section: &'static str, key: &'static str) -> Option<String> {
        let value = self.string(section, key)?;
        if value.is_empty() {
            self.problem_at(section, key, "must not be empty".into());
            return None;
        }
        Some(value)
    }

    /// A string where empty means "not set".
    pub(crate) fn optional(
        &self,
        section: &'static str,
        key: &'static str,
    ) -> Option<Option<String>> {
        self.string(section, key)
            .map(|s| (!s.is_empty()).then_some(s))
    }

    /// A path where empty means "not set"; relative paths are relative to `dir`.
    pub(crate) fn optional_path(
        &self,
        section: &'static str,
        key: &'static str,
        dir: &Path,
    ) -> Option<Option<PathBuf>> {
        self.optional(section, key).map(|p| p.map(|p| dir.join(p)))
    }

    /// An id: 1-64 characters of `A-Z a-z 0-9 . _ -`.
    pub(crate) fn identifier(
        &mut self,
        section: &'static str,
        key: &'static str,
    ) -> Option<String> {
        let value = self.string(section, key)?;
        let valid = (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            self.problem_at(
                section,
                key,
                format!("invalid value {value:?}: expected 1-64 characters of A-Z a-z 0-9 . _ -"),
            );
            return None;
        }
        Some(value)
    }

    /// The private key file: `$CREDENTIALS_DIRECTORY/{credential}` when systemd provides
    /// credentials (`CREDENTIALS_DIRECTORY` in `env`, not empty), else `section.key` resolved
    /// against `state_dir` (an absolute `key` stays as it is).
    pub(crate) fn private_key(
        &mut self,
        section: &'static str,
        key: &'static str,
        state_dir: Option<&Path>,
        env: &[(String, String)],
        credential: &str,
    ) -> Option<PathBuf> {
        let name = self.non_empty(section, key);
        let credentials = env
            .iter()
            .find(|(var, value)| var == CREDENTIALS_ENV && !value.is_empty());
        match (credentials, state_dir, name) {
            (Some((_, dir)), _, _) => Some(Path::new(dir).join(credential)),
            // `join` keeps an absolute `key` as it is.
            (None, Some(state_dir), Some(name)) => Some(state_dir.join(name)),
            (None, _, _) => None,
        }
    }

    /// The `[mqtt]` keys both daemons share (host, port, client_id, tls, ca_file, client_cert,
    /// client_key, username, password, password_file, keep_alive_seconds), checked against
    /// each other. Files are relative to `config_dir`; an empty client id becomes
    /// `default_client_id` (`None`: its ingredients were invalid, already reported).
    pub(crate) fn mqtt_connection(
        &mut self,
        config_dir: &Path,
        default_client_id: Option<String>,
    ) -> Option<MqttConnection> {
        let host = self.non_empty("mqtt", "host");
        let port = self.int("mqtt", "port").and_then(|p| u16::try_from(p).ok());
        let client_id = match self.optional("mqtt", "client_id") {
            Some(Some(id)) => Some(id),
            Some(None) => default_client_id,
            None => None,
        };
        let tls = self.boolean("mqtt", "tls");
        let ca_file = self.optional_path("mqtt", "ca_file", config_dir);
        let client_cert = self.optional_path("mqtt", "client_cert", config_dir);
        let client_key = self.optional_path("mqtt", "client_key", config_dir);
        if tls == Some(false) {
            for key in ["ca_file", "client_cert", "client_key"] {
                if self.optional("mqtt", key).is_some_and(|v| v.is_some()) {
                    self.problem_at("mqtt", key, "has no effect unless mqtt.tls = true".into());
                }
            }
        }
        let client_auth = match (client_cert, client_key) {
            (Some(Some(cert)), Some(Some(key))) => Some(Some(ClientAuth { cert, key })),
            (Some(None), Some(None)) => Some(None),
            (Some(Some(_)), Some(None)) => {
                self.problem_at("mqtt", "client_cert", "needs mqtt.client_key too".into());
                None
            }
            (Some(None), Some(Some(_))) => {
                self.problem_at("mqtt", "client_key", "needs mqtt.client_cert too".into());
                None
            }
            _ => None,
        };
        // No early return before every check has run: each problem must be reported.
        let tls = match (tls, ca_file, client_auth) {
            (Some(true), Some(ca_file), Some(client_auth)) => Some(Some(TlsSettings {
                ca_file,
                client_auth,
            })),
            (Some(false), _, _) => Some(None),
            _ => None,
        };

        let username = self.optional("mqtt", "username");
        let password = self.optional("mqtt", "password");
        let password_file = self.optional_path("mqtt", "password_file", config_dir);
        let password = match (password, password_file) {
            (Some(Some(_)), Some(Some(_))) => {
                self.problem_at(
                    "mqtt",
                    "password_file",
                    "set mqtt.password or mqtt.password_file, not both".into(),
                );
                None
            }
            (Some(Some(secret)), Some(None)) => Some(Some(MqttPassword::Inline(Secret(secret)))),
            (Some(None), Some(Some(file))) => Some(Some(MqttPassword::File(file))),
            (Some(None), Some(None)) => Some(None),
            _ => None,
        };
        if let (Some(None), Some(Some(_))) = (&username, &password) {
            let key = if self.is_set("mqtt", "password") {
                "password"
            } else {
                "password_file"
            };
            self.problem_at("mqtt", key, "a password needs mqtt.username".into());
        }
        let keep_alive = self
            .int("mqtt", "keep_alive_seconds")
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs);
        Some(MqttConnection {
            host: host?,
            port: port?,
            client_id: client_id?,
            tls: tls?,
            username: username?,
            password: password?,
            keep_alive: keep_alive?,
        })
    }

    /// `[log]`: `level` and `format`.
    pub(crate) fn log(&self) -> Option<LogSettings> {
        let level = self.string("log", "level").map(|l| match l.as_str() {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => LogLevel::Info,
        });
        let format = self.string("log", "format").map(|f| match f.as_str() {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        });
        Some(LogSettings {
            level: level?,
            format: format?,
        })
    }
}

/// Set by systemd's `LoadCredential=`: when present, a daemon's private key is read from
/// this directory, whatever the configuration says.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Converts a value from the file to the key's type, checking its range.
fn from_toml(spec: &KeySpec, value: &Value) -> Result<Raw, String> {
    let raw = match (spec.kind, &value.kind) {
        (Kind::Str | Kind::OneOf(_), ValueKind::String(s)) => Raw::Str(s.clone()),
        (Kind::Int { .. } | Kind::IntRule { .. }, ValueKind::I64(i)) => Raw::Int(*i),
        (Kind::Float { .. }, ValueKind::Float(x)) => Raw::Float(*x),
        (Kind::Float { .. }, ValueKind::I64(i)) => Raw::Float(*i as f64),
        (Kind::Bool, ValueKind::Boolean(b)) => Raw::Bool(*b),
        (Kind::StrList, ValueKind::Array(items)) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                match &item.kind {
                    ValueKind::String(s) => list.push(s.clone()),
                    _ => return Err(mismatch(spec, item)),
                }
            }
            Raw::List(list)
        }
        (Kind::IntList { .. }, ValueKind::Array(items)) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                match &item.kind {
                    ValueKind::I64(i) => list.push(*i),
                    _ => return Err(mismatch(spec, item)),
                }
            }
            Raw::IntList(list)
        }
        (Kind::FloatList { .. }, ValueKind::Array(items)) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                match &item.kind {
                    ValueKind::Float(x) => list.push(*x),
                    ValueKind::I64(i) => list.push(*i as f64),
                    _ => return Err(mismatch(spec, item)),
                }
            }
            Raw::FloatList(list)
        }
        _ => return Err(mismatch(spec, value)),
    };
    check_range(spec, raw)
}

/// Parses an environment variable's text as the key's type, checking its range.
fn from_env(spec: &KeySpec, text: &str) -> Result<Raw, String> {
    let invalid = || {
        format!(
            "invalid value {}: expected {}",
            if spec.secret {
                "(hidden)".to_owned()
            } else {
                format!("{text:?}")
            },
            spec.kind.expected()
        )
    };
    let items = || {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let raw = match spec.kind {
        Kind::Str | Kind::OneOf(_) => Raw::Str(text.to_owned()),
        Kind::Int { .. } | Kind::IntRule { .. } => {
            Raw::Int(text.trim().parse().map_err(|_| invalid())?)
        }
        Kind::Float { .. } => Raw::Float(text.trim().parse().map_err(|_| invalid())?),
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Raw::Bool(true),
            "false" => Raw::Bool(false),
            _ => return Err(invalid()),
        },
        Kind::StrList => Raw::List(items()),
        Kind::IntList { .. } => Raw::IntList(
            items()
                .iter()
                .map(|i| i.parse().map_err(|_| invalid()))
                .collect::<Result<_, _>>()?,
        ),
        Kind::FloatList { .. } => Raw::FloatList(
            items()
                .iter()
                .map(|x| x.parse().map_err(|_| invalid()))
                .collect::<Result<_, _>>()?,
        ),
    };
    check_range(spec, raw)
}

/// The range checks shared by file and environment values.
fn check_range(spec: &KeySpec, raw: Raw) -> Result<Raw, String> {
    let out_of_range =
        |shown: String| format!("invalid value {shown}: expected {}", spec.kind.expected());
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    match (spec.kind, &raw) {
        (Kind::Int { min, max }, Raw::Int(i)) if !(min..=max).contains(i) => {
            Err(out_of_range(i.to_string()))
        }
        (Kind::IntRule { rule, .. }, Raw::Int(i)) => rule(*i).map(|()| raw),
        (
            Kind::Float {
                min,
                min_inclusive,
                max,
            },
            Raw::Float(x),
        ) if !x.is_finite() || *x < min || (*x == min && !min_inclusive) || *x > max => {
            Err(out_of_range(x.to_string()))
        }
        (Kind::OneOf(names), Raw::Str(s)) if !names.contains(&s.as_str()) => {
            Err(out_of_range(format!("{s:?}")))
        }
        (Kind::IntList { len, min, max }, Raw::IntList(items))
            if items.len() != len || items.iter().any(|i| !(min..=max).contains(i)) =>
        {
            Err(out_of_range(list(
                items.iter().map(ToString::to_string).collect(),
            )))
        }
        (Kind::FloatList { len, min, max }, Raw::FloatList(items))
            if items.len() != len
                || items.iter().any(|x| !x.is_finite() || *x < min || *x > max) =>
        {
            Err(out_of_range(list(
                items.iter().map(ToString::to_string).collect(),
            )))
        }
        _ => Ok(raw),
    }
}

/// The message for a value of the wrong type.
fn mismatch(spec: &KeySpec, value: &Value) -> String {
    let expected = spec.kind.expected();
    let shown = match &value.kind {
        _ if spec.secret => Some("(hidden)".to_owned()),
        ValueKind::String(s) => Some(format!("{s:?}")),
        ValueKind::I64(i) => Some(i.to_string()),
        ValueKind::I128(i) => Some(i.to_string()),
        ValueKind::U64(i) => Some(i.to_string()),
        ValueKind::U128(i) => Some(i.to_string()),
        ValueKind::Float(x) => Some(x.to_string()),
        ValueKind::Boolean(b) => Some(b.to_string()),
        ValueKind::Nil | ValueKind::Table(_) | ValueKind::Array(_) => None,
    };
    match shown {
        Some(shown) => format!("invalid value {shown}: expected {expected}"),
        None => format!("expected {expected}, found {}", describe(value)),
    }
}

/// What kind of value this is, for messages.
fn describe(value: &Value) -> &'static str {
    match value.kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "an integer"
        }
        ValueKind::Float(_) => "a number",
        ValueKind::String(_) => "a string",
        ValueKind::Table(_) => "a table",
        ValueKind::Array(_) => "a list",
    }
}

/// ` (did you mean "port"?)` when a known name is a near miss of `name` (one edit, or two for
/// names of six characters or more), else empty.
pub(crate) fn did_you_mean<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let allowed = if name.chars().count() >= 6 { 2 } else { 1 };
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= allowed)
        .min()
        .map_or(String::new(), |(_, k)| format!(" (did you mean {k:?}?)"))
}

/// Edit distance by characters, counting a swap of two neighbours as one edit (optimal string
/// alignment), so `prot` is one edit from `port`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Suggestions come only for near misses.
    #[test]
    fn suggestions_are_near_misses() {
        assert_eq!(edit_distance("prot", "port"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            did_you_mean("hots", ["host", "port"].into_iter()),
            " (did you mean \"host\"?)"
        );
        assert_eq!(did_you_mean("zzzzzz", ["host", "port"].into_iter()), "");
        assert_eq!(did_you_mean("id", ["sim"].into_iter()), "");
        assert_eq!(
            did_you_mean("retension_dys", ["retention_days"].into_iter()),
            " (did you mean \"retention_days\"?)"
        );
    }
}
