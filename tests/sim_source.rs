//! Specification of the `sim` beacon source task (`venuetrace::gateway::sim`): pacing on
//! tokio's paused clock, cancellation, a dropped receiver, configuration errors and the
//! ground-truth file. The simulation model itself is specified by the unit tests in
//! `src/sim.rs`.

use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use venuetrace::advert::Advert;
use venuetrace::gateway::sim::{SimOptions, SimSourceError, SimStop, SimSummary, run_sim};
use venuetrace::sim::{GroundTruth, SimConfig, SimError, SimVenue};

/// A one-hour city with one busy venue, so adverts cover the whole hour.
fn one_hour() -> SimConfig {
    SimConfig {
        seed: 42,
        hours: 1.0,
        phones: 200,
        day_curve: false,
        advert_interval_ms: 10_000,
        venues: vec![
            SimVenue::new("kiosk", "kiosk", 120.0, 10.0),
            SimVenue::new("cafe", "cafe", 30.0, 30.0),
        ],
        ..SimConfig::default()
    }
}

fn options(speed: f64) -> SimOptions {
    SimOptions {
        config: one_hour(),
        venue: "kiosk".to_owned(),
        speed,
        ground_truth: None,
    }
}

/// The running source task.
type Task = tokio::task::JoinHandle<Result<SimSummary, SimSourceError>>;

fn spawn(opts: SimOptions, capacity: usize) -> (mpsc::Receiver<Advert>, CancellationToken, Task) {
    let (tx, rx) = mpsc::channel(capacity);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_sim(opts, tx, cancel.clone()));
    (rx, cancel, task)
}

/// At speed 60 a simulated hour takes a (paused) minute: every advert arrives when its
/// simulated offset from the first advert, divided by 60, has elapsed, and the summary counts
/// what was received.
#[tokio::test(start_paused = true)]
async fn speed_sixty_plays_an_hour_in_a_minute() {
    let (mut rx, _cancel, task) = spawn(options(60.0), 16);
    let mut received = Vec::new();
    let mut start = None;
    while let Some(advert) = rx.recv().await {
        let now = Instant::now();
        let (t0, first_ms) = *start.get_or_insert((now, advert.time_ms));
        let expected = Duration::from_millis(advert.time_ms - first_ms) / 60;
        let elapsed = now - t0;
        assert!(
            elapsed >= expected && elapsed <= expected + Duration::from_millis(5),
            "advert at sim +{} ms received after {elapsed:?}, expected {expected:?}",
            advert.time_ms - first_ms
        );
        received.push(advert);
    }
    let summary = task.await.expect("task").expect("simulation");
    assert_eq!(summary.stop, SimStop::Finished);
    assert_eq!(summary.sent, received.len() as u64);
    assert_eq!(summary.gaen + summary.bluetrace, summary.sent);
    assert!(summary.gaen > 0 && summary.bluetrace > 0);
    let (first, last) = summary.sim_span_ms.expect("adverts were sent");
    let span = Duration::from_millis(last - first);
    assert!(
        span > Duration::from_secs(55 * 60),
        "simulated span {span:?}"
    );
    let wall = Instant::now() - start.expect("adverts").0;
    assert!(wall <= Duration::from_secs(60), "took {wall:?}");
    assert!(wall >= span / 60, "took {wall:?} for {span:?}");
    // Advert times stay in simulated time, inside the configured window.
    let config = one_hour();
    assert!(first >= config.start_unix_s * 1000);
    assert!(last < (config.start_unix_s + 3600) * 1000);
}

/// Cancelling a paced simulation stops it promptly (no waiting for the next deadline), with
/// a summary of what was sent.
#[tokio::test(start_paused = true)]
async fn cancel_stops_promptly() {
    let (mut rx, cancel, task) = spawn(options(1.0), 16);
    for _ in 0..5 {
        rx.recv().await.expect("an advert before cancelling");
    }
    let cancelled_at = Instant::now();
    cancel.cancel();
    let summary = tokio::time::timeout(Duration::from_millis(10), task)
        .await
        .expect("stops within 10 ms")
        .expect("task")
        .expect("simulation");
    assert_eq!(summary.stop, SimStop::Cancelled);
    assert!(summary.sent >= 5 && summary.sent < 100);
    assert!(Instant::now() - cancelled_at < Duration::from_millis(10));
}

/// A full channel is waited on, and a receiver that goes away ends the simulation.
#[tokio::test(start_paused = true)]
async fn dropped_receiver_ends_the_simulation() {
    let (mut rx, _cancel, task) = spawn(options(0.0), 4);
    for _ in 0..10 {
        rx.recv().await.expect("advert");
    }
    drop(rx);
    let summary = task.await.expect("task").expect("simulation");
    assert_eq!(summary.stop, SimStop::ReceiverClosed);
    assert!(
        summary.sent >= 10 && summary.sent <= 15,
        "sent {}",
        summary.sent
    );
}

/// A venue id that is not in the config is an error naming it (and nothing is written);
/// so are an invalid config and a negative speed.
#[tokio::test(start_paused = true)]
async fn unknown_venue_and_bad_options_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truth_path = dir.path().join("truth.json");
    let opts = SimOptions {
        venue: "mall".to_owned(),
        ground_truth: Some(truth_path.clone()),
        ..options(0.0)
    };
    let (_rx, _cancel, task) = spawn(opts, 4);
    let err = task.await.expect("task").expect_err("unknown venue");
    assert!(matches!(
        err,
        SimSourceError::Sim(SimError::UnknownVenue { ref venue, .. }) if venue == "mall"
    ));
    assert!(err.to_string().contains("\"mall\""), "{err}");
    assert!(!truth_path.exists());

    let mut bad = options(0.0);
    bad.config.hours = 0.0;
    let (_rx, _cancel, task) = spawn(bad, 4);
    let err = task.await.expect("task").expect_err("invalid config");
    assert!(err.to_string().contains("hours 0"), "{err}");

    let (_rx, _cancel, task) = spawn(options(-1.0), 4);
    let err = task.await.expect("task").expect_err("negative speed");
    assert!(matches!(err, SimSourceError::InvalidSpeed { .. }), "{err}");
}

/// The ground truth is written (atomically: no temporary file left) before adverts flow, is
/// valid JSON, and agrees with the stream: the venue's visit count and the population.
#[tokio::test(start_paused = true)]
async fn ground_truth_file_is_written_and_parseable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("truth.json");
    let opts = SimOptions {
        ground_truth: Some(path.clone()),
        ..options(0.0)
    };
    let (mut rx, _cancel, task) = spawn(opts, 64);
    let mut n = 0u64;
    while rx.recv().await.is_some() {
        n += 1;
    }
    let summary = task.await.expect("task").expect("simulation");
    assert_eq!(summary.sent, n);
    let text = std::fs::read_to_string(&path).expect("ground truth written");
    let truth: GroundTruth = serde_json::from_str(&text).expect("ground truth parses");
    assert_eq!(truth.phones.len(), one_hour().phones);
    let visits = truth
        .phones
        .iter()
        .flat_map(|p| &p.visits)
        .filter(|v| v.venue == "kiosk")
        .count();
    assert_eq!(visits, summary.visits);
    assert_eq!(truth.venues, ["kiosk", "cafe"]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("truth.json")]);
}
