//! The `venuetrace-authority` commands: argument definitions ([`cli`]) and what each command
//! does ([`keys`], [`registry`], [`service`], [`bluetrace`]; `check-config` with [`config`]).
//! The store is [`store`] (SQLite); [`pg`] is the PostgreSQL one, not yet selectable. The
//! binary parses arguments, calls [`run`] and maps the error to an exit code; everything else
//! is here, so tests and man-page generation see the same definitions.

pub mod bluetrace;
pub mod cli;
pub mod config;
pub mod ingest;
pub mod keys;
pub mod pg;
pub mod registry;
pub mod service;
pub mod store;

use crate::exit::Exit;
use std::io::Write;

pub use cli::{Cli, Command};

/// A command that failed: what to tell the user, and which exit code that is.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A `keys` command failed.
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    /// The configuration is invalid; every problem, one per line. (Shown in the message, not
    /// as a `#[source]`, so the list starts on a line of its own.)
    #[error("invalid configuration:\n{0}")]
    Config(config::ConfigErrors),
    /// Writing the result failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    /// A store-backed command failed.
    #[error(transparent)]
    Service(#[from] service::ServiceError),
    /// A `bluetrace` command failed.
    #[error(transparent)]
    Bluetrace(#[from] bluetrace::BluetraceError),
}

impl CommandError {
    /// The sysexits code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            CommandError::Keys(e) => e.exit(),
            CommandError::Config(_) => Exit::Config,
            CommandError::Output(_) => Exit::IoErr,
            CommandError::Service(e) => e.exit(),
            CommandError::Bluetrace(e) => e.exit(),
        }
    }
}

/// Runs one parsed command line, writing results to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CommandError> {
    match cli.command {
        Command::Keys(cli::KeysCommand::Import(args)) => import(args, out)?,
        Command::Keys(keys) => keys::run(keys, out)?,
        Command::Keygen { key, store } => {
            let path = match key {
                Some(path) => path,
                None => {
                    service::load_config(&store.config, store.database.as_deref())?
                        .0
                        .authority
                        .private_key
                }
            };
            let keys = service::keygen(&path)?;
            writeln!(
                out,
                "wrote private key {}\npublic key {}\nset it as authority.public_key in every gateway.toml",
                path.display(),
                keys.public()
            )
            .map_err(CommandError::Output)?;
        }
        Command::Run { store } => {
            let (config, database) =
                service::load_config(&store.config, store.database.as_deref())?;
            service::run(&config, &database)?;
        }
        Command::Match { store, full } => {
            let (config, database) =
                service::load_config(&store.config, store.database.as_deref())?;
            let mut db = service::open_store(&database)?;
            let summary = service::match_store_cached(
                &mut *db,
                &service::risk_config(&config.matching),
                full,
                &mut service::MatchCache::from_settings(&config.matching),
                &mut service::terminal_progress(),
            )?;
            writeln!(
                out,
                "matched {} days ({} sightings read): {} exposure events in {} venue-hours",
                summary.days, summary.sightings, summary.events, summary.venue_hours
            )
            .map_err(CommandError::Output)?;
            // BlueTrace venue-hours are recomputed whole (see `bluetrace::recompute_hours`).
            let bt = bluetrace::recompute_hours(&mut *db, &config.bluetrace)
                .map_err(service::ServiceError::from)?;
            if bt.cases > 0 {
                writeln!(out, "{}", bt.line(&config.file)).map_err(CommandError::Output)?;
            }
        }
        Command::Exposures(args) => {
            let (config, database) =
                service::load_config(&args.store.config, args.store.database.as_deref())?;
            let tz = config.authority.timezone.clone();
            let filter = store::ExposureFilter {
                venue: args.venue.clone(),
                from_s: args
                    .from
                    .as_deref()
                    .map(|v| service::parse_time("--from", v, &tz))
                    .transpose()?,
                to_s: args
                    .to
                    .as_deref()
                    .map(|v| service::parse_time("--to", v, &tz))
                    .transpose()?,
                min_score: args.min_score,
            };
            let db = service::open_store(&database)?;
            bluetrace::note_without_keys(&*db, &config, &mut std::io::stderr())
                .map_err(service::ServiceError::from)?;
            service::exposures(&*db, &filter, &tz, args.format, out)?;
        }
        Command::Bluetrace(command) => bluetrace_command(command, out)?,
        Command::Gateways(command) => gateways(command, out)?,
        Command::Venues(command) => venues(command, out)?,
        Command::Batches(cli::BatchesCommand::Quarantine(cli::QuarantineCommand::List {
            limit,
            format,
            store,
        })) => {
            let db = open(&store)?;
            registry::quarantine_list(&*db, limit, format, out)
                .map_err(service::ServiceError::from)?;
        }
        Command::CheckConfig { file } => {
            let loaded =
                config::load(&file, &config::process_env()).map_err(CommandError::Config)?;
            writeln!(out, "{}: ok\n{}", file.display(), loaded.summary())
                .map_err(CommandError::Output)?;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn bluetrace_command(
    command: cli::BluetraceCommand,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    use cli::{BluetraceCommand as B, CasesCommand as C};
    let load =
        |store: &cli::StoreArgs| service::load_config(&store.config, store.database.as_deref());
    match command {
        B::Cases(C::Add {
            uids,
            from,
            to,
            label,
            encounters,
            store,
        }) => {
            let (config, database) = load(&store)?;
            let tz = &config.authority.timezone;
            let (from_s, to_s) = (
                service::parse_time("--from", &from, tz)?,
                service::parse_time("--to", &to, tz)?,
            );
            let mut db = service::open_store(&database)?;
            bluetrace::cases_add(
                &mut *db,
                &config,
                &uids,
                from_s,
                to_s,
                label.as_deref(),
                encounters.as_deref(),
                now_ms(),
                out,
            )?;
        }
        B::Cases(C::List { format, store }) => {
            let (config, database) = load(&store)?;
            let db = service::open_store(&database)?;
            bluetrace::note_without_keys(&*db, &config, &mut std::io::stderr())
                .map_err(service::ServiceError::from)?;
            bluetrace::cases_list(&*db, &config.authority.timezone, format, out)?;
        }
        B::Cases(C::Remove { uid, store }) => {
            let (config, database) = load(&store)?;
            let mut db = service::open_store(&database)?;
            bluetrace::cases_remove(&mut *db, &config, uid, out)?;
        }
        command @ (B::Contacts(_) | B::Visits(_)) => {
            let (kind, args) = match command {
                B::Contacts(args) => (bluetrace::QueryKind::Contacts, args),
                B::Visits(args) => (bluetrace::QueryKind::Visits, args),
                B::Cases(_) => unreachable!("matched above"),
            };
            let (config, database) = load(&args.store)?;
            let tz = &config.authority.timezone;
            let request = bluetrace::ContactsRequest {
                uid: args.uid,
                from_s: service::parse_time("--from", &args.from, tz)?,
                to_s: service::parse_time("--to", &args.to, tz)?,
                operator: args
                    .operator
                    .filter(|o| !o.trim().is_empty())
                    .unwrap_or_else(|| bluetrace::default_operator(&config::process_env())),
                encounters: args.encounters,
                format: args.format,
                kind,
            };
            // Checked before the store is opened: a refused use touches nothing.
            if !config.bluetrace.identify_contacts {
                return Err(bluetrace::BluetraceError::Disabled {
                    config: config.file.clone(),
                }
                .into());
            }
            let mut db = service::open_store(&database)?;
            bluetrace::contacts(
                &mut *db,
                &config,
                &database,
                &request,
                now_ms(),
                out,
                &mut std::io::stderr(),
            )?;
        }
    }
    Ok(())
}

fn open(store: &cli::StoreArgs) -> Result<store::DynStore, CommandError> {
    let (_, database) = service::load_config(&store.config, store.database.as_deref())?;
    Ok(service::open_store(&database)?)
}

fn gateways(command: cli::GatewaysCommand, out: &mut dyn Write) -> Result<(), CommandError> {
    use cli::GatewaysCommand as G;
    let result = match command {
        G::Add {
            id,
            venue,
            venue_kind,
            public_key,
            label,
            calibration,
            store,
        } => {
            let mut db = open(&store)?;
            registry::gateways_add(
                &mut *db,
                &id,
                &venue,
                &venue_kind,
                &public_key,
                label.as_deref(),
                calibration,
                out,
            )
        }
        G::List { format, store } => registry::gateways_list(&*open(&store)?, format, out),
        G::Revoke { id, store } => registry::gateways_revoke(&mut *open(&store)?, &id, out),
        G::Status { format, store } => registry::gateways_status(&*open(&store)?, format, out),
    };
    result.map_err(|e| CommandError::Service(e.into()))
}

fn venues(args: cli::VenuesArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    use cli::VenuesCommand as V;
    let command = args.command.unwrap_or(V::List {
        format: args.format,
        store: args.store,
    });
    let result = match command {
        V::Add {
            name,
            kind,
            location,
            store,
        } => registry::venues_add(&mut *open(&store)?, &name, &kind, location.as_deref(), out),
        V::List { format, store } => registry::venues_list(&*open(&store)?, format, out),
    };
    result.map_err(|e| CommandError::Service(e.into()))
}

fn import(args: cli::ImportArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let (config, database) =
        service::load_config(&args.store.config, args.store.database.as_deref())?;
    let mut trusted = config.keys.public_keys.clone();
    for arg in &args.public_keys {
        trusted.push(keys::parse_public_key_arg(arg)?);
    }
    let mut db = service::open_store(&database)?;
    let allow_unsigned = args.allow_unsigned || config.keys.allow_unsigned;
    let result = registry::keys_import(
        &mut *db,
        &args.files,
        &trusted,
        allow_unsigned,
        &mut std::io::stderr(),
        out,
        args.format,
    );
    // Match what was imported even when some files were rejected.
    if !args.no_match {
        let summary = service::match_store_cached(
            &mut *db,
            &service::risk_config(&config.matching),
            false,
            &mut service::MatchCache::from_settings(&config.matching),
            &mut service::terminal_progress(),
        )?;
        let _ = writeln!(
            std::io::stderr(),
            "matched {} days ({} sightings read): {} exposure events in {} venue-hours",
            summary.days,
            summary.sightings,
            summary.events,
            summary.venue_hours
        );
    }
    result
        .map(|_| ())
        .map_err(|e| CommandError::Service(e.into()))
}
