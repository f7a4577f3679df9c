//! venuetrace: venue exposure notification from fixed BLE gateways.
//!
//! Phones at a venue broadcast rotating, encrypted beacons (Google/Apple Exposure Notification,
//! BlueTrace). Gateways count them per time window without keeping addresses; the health
//! authority matches them against the keys of confirmed cases to say which venues had an
//! infectious person present, when, and how many people were exposed. See `README.md` and
//! `docs/` for the whole picture.
//!
//! # Layout
//!
//! Pure protocol logic (no I/O crates, values in and values out):
//! - [`advert`]: one received advertisement and the AD-structure parser.
//! - [`crypto`]: Exposure Notification keys and identifiers (TEK → RPIK/AEMK → RPI/AEM).
//! - [`beacon`]: what an advert is: a GAEN beacon (0xFD6F service data), a BlueTrace phone,
//!   malformed, or unrelated.
//! - [`bluetrace`]: BlueTrace/OpenTrace v2 (Wiqaytna): the GATT read payload and TempID
//!   encryption (AES-256-GCM, 16-byte IV), validity windows.
//! - [`aggregate`]: the window aggregator (adverts → per-RPI sightings per window, no MAC).
//! - [`batch`]: the batch schema a gateway seals per window (encode, validated decode).
//! - [`seal`]: HPKE sealing of batches to the authority, and unforgeable receipt tags.
//! - [`hci`]: HCI LE (extended) advertising report events → adverts, and their encoder.
//! - [`btsnoop`]: btsnoop capture files (`btmon -w`, Android HCI snoop log): reader, writer,
//!   and the adverts a capture holds.
//! - [`rpi_index`]: the hash index that joins derived RPIs against stored sightings.
//! - [`presence`]: BlueTrace TempID sightings → presences per venue and UID → a case's
//!   contacts and venue-hour counts (decryption, replay and organisation checks).
//! - [`matching`]: exposure matching (diagnosis keys × venue sightings → GAEN v2 exposure
//!   windows, risk scores, venue hours with co-presence counts).
//! - [`export`]: diagnosis-key export files (`export.bin` + `export.sig` in a zip): read,
//!   validate, verify signatures, write and sign.
//! - [`sim`]: a simulated city day (phones, venues, rotating keys and addresses, path loss):
//!   deterministic advert streams per venue and the ground truth, for tests and the demo.
//!
//! Edges (files, terminals, processes):
//! - [`authority`]: the `venuetrace-authority` commands (definitions and implementations).
//! - [`gateway`]: the `venuetrace-gateway` commands and daemon (sources: BlueZ, with BlueTrace
//!   TempID reads over GATT, replay, sim; outbox, publisher, D-Bus status).
//! - [`demo`]: `venuetrace-demo` (`./scripts/demo`): gateways, broker and authority on one
//!   machine on a simulated city, the report against its ground truth, and its HTML page.
//! - [`notify`]: systemd readiness notifications (`sd_notify`).
//! - [`process`]: logging and signals of both daemons.
//! - [`output`]: tables, JSON and timestamps for people and programs.
//! - [`exit`]: sysexits codes and error reporting shared by both binaries.
//! - [`config_schema`]: the strict-configuration machinery (schema walker, every problem at
//!   once, environment overrides) both daemons' configurations are built on.
//!
//! The binaries in `src/bin/` only parse arguments, call into this library and map errors to
//! exit codes.

pub mod advert;
pub mod aggregate;
pub mod authority;
pub mod batch;
pub mod beacon;
pub mod bluetrace;
pub mod btsnoop;
pub mod config_schema;
pub mod crypto;
pub mod demo;
pub mod exit;
pub mod export;
pub mod gateway;
pub mod hci;
pub mod matching;
pub mod notify;
pub mod output;
pub mod presence;
pub mod process;
pub mod rpi_index;
pub mod seal;
pub mod sim;
