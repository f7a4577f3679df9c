//! The demo's simulated city: a built-in list of venues as found in a Moroccan city, with
//! arrival rates, dwell times and radio settings that suit each kind, and the
//! [`SimConfig`] the demo hands to every gateway (as a `sim.city` file) and uses itself for
//! the ground truth.
//!
//! Pure: values in, a config out. Running the gateways is [`super::run`]'s job; the model is
//! [`crate::sim`]'s.

use crate::sim::{PathLoss, SimConfig, SimVenue};

/// One built-in venue: id, kind, peak arrivals per hour, mean dwell in minutes, farthest
/// visitor distance from the gateway in metres, path-loss exponent.
struct Preset {
    id: &'static str,
    kind: &'static str,
    arrivals_per_hour: f64,
    mean_dwell_minutes: f64,
    max_distance_m: f64,
    exponent: f64,
}

/// The built-in venues, in the order `--venues N` takes them. The first three are the
/// simulator's defaults. Rates are peak rates (the day curve thins them at night).
const PRESETS: &[Preset] = &[
    // A neighbourhood supermarket: steady flow, 20-minute shop, aisles around the gateway.
    Preset {
        id: "supermarket-1",
        kind: "supermarket",
        arrivals_per_hour: 90.0,
        mean_dwell_minutes: 20.0,
        max_distance_m: 20.0,
        exponent: 2.5,
    },
    // Open-air stalls: people linger and wander farther from the gateway.
    Preset {
        id: "souk-1",
        kind: "souk",
        arrivals_per_hour: 120.0,
        mean_dwell_minutes: 30.0,
        max_distance_m: 30.0,
        exponent: 2.2,
    },
    // Intercity coaches (CTM and the like): many short waits.
    Preset {
        id: "bus-station-1",
        kind: "bus_station",
        arrivals_per_hour: 150.0,
        mean_dwell_minutes: 12.0,
        max_distance_m: 20.0,
        exponent: 2.5,
    },
    // A big hall: the busiest venue, waits a little longer than for a bus.
    Preset {
        id: "train-station-1",
        kind: "train_station",
        arrivals_per_hour: 180.0,
        mean_dwell_minutes: 15.0,
        max_distance_m: 25.0,
        exponent: 2.3,
    },
    // A small counter: few people, short visits, all close.
    Preset {
        id: "pharmacy-1",
        kind: "pharmacy",
        arrivals_per_hour: 25.0,
        mean_dwell_minutes: 6.0,
        max_distance_m: 6.0,
        exponent: 2.5,
    },
    // Steam rooms behind thick, wet walls: long stays, strong attenuation.
    Preset {
        id: "hammam-1",
        kind: "hammam",
        arrivals_per_hour: 20.0,
        mean_dwell_minutes: 60.0,
        max_distance_m: 12.0,
        exponent: 3.0,
    },
    // A terrace café: people sit for a long mint tea.
    Preset {
        id: "cafe-1",
        kind: "cafe",
        arrivals_per_hour: 40.0,
        mean_dwell_minutes: 45.0,
        max_distance_m: 12.0,
        exponent: 2.5,
    },
    // A neighbourhood mosque: many worshippers for about half an hour.
    Preset {
        id: "mosque-1",
        kind: "mosque",
        arrivals_per_hour: 100.0,
        mean_dwell_minutes: 25.0,
        max_distance_m: 25.0,
        exponent: 2.4,
    },
    // A health centre's waiting room.
    Preset {
        id: "clinic-1",
        kind: "clinic",
        arrivals_per_hour: 50.0,
        mean_dwell_minutes: 40.0,
        max_distance_m: 15.0,
        exponent: 2.6,
    },
    // A restaurant in the medina: lunch and dinner crowds.
    Preset {
        id: "restaurant-1",
        kind: "restaurant",
        arrivals_per_hour: 35.0,
        mean_dwell_minutes: 50.0,
        max_distance_m: 12.0,
        exponent: 2.5,
    },
    // A bank branch: queues at the counters.
    Preset {
        id: "bank-1",
        kind: "bank",
        arrivals_per_hour: 30.0,
        mean_dwell_minutes: 15.0,
        max_distance_m: 10.0,
        exponent: 2.5,
    },
    // A tramway stop (Rabat-Salé, Casablanca): short waits, open air.
    Preset {
        id: "tram-stop-1",
        kind: "tram_stop",
        arrivals_per_hour: 120.0,
        mean_dwell_minutes: 6.0,
        max_distance_m: 15.0,
        exponent: 2.1,
    },
];

/// How many built-in venues there are (the largest `--venues`).
pub const MAX_VENUES: usize = PRESETS.len();

/// The first `n` built-in venues (all of them if `n` is larger).
pub fn venues(n: usize) -> Vec<SimVenue> {
    PRESETS
        .iter()
        .take(n)
        .map(|p| SimVenue {
            max_distance_m: p.max_distance_m,
            path_loss: PathLoss {
                exponent: p.exponent,
                ..PathLoss::default()
            },
            ..SimVenue::new(p.id, p.kind, p.arrivals_per_hour, p.mean_dwell_minutes)
        })
        .collect()
}

/// What the command line chooses about the city.
#[derive(Clone, Debug, PartialEq)]
pub struct CityChoice {
    /// Seed of every random choice.
    pub seed: u64,
    /// Population size.
    pub phones: usize,
    /// Number of built-in venues (1..=[`MAX_VENUES`]).
    pub venues: usize,
    /// Share of phones later diagnosed.
    pub infected_share: f64,
    /// Length of the simulated day, hours.
    pub hours: f64,
}

/// The simulation every gateway of the demo runs: the simulator's defaults with the chosen
/// venues, population, share and length, starting at `start_unix_s`.
pub fn config(choice: &CityChoice, start_unix_s: u64) -> SimConfig {
    SimConfig {
        seed: choice.seed,
        phones: choice.phones,
        venues: venues(choice.venues),
        infected_share: choice.infected_share,
        hours: choice.hours,
        start_unix_s,
        // The gateways read the Wiqaytna phones' TempIDs (bluetrace.collect_tempids).
        bluetrace_reads: true,
        ..SimConfig::default()
    }
}

/// Start of the simulated day: the latest 06:00 UTC from which `hours` end by `now_unix_s`
/// (so every window is in the past, as the authority requires, and inside its retention).
pub fn day_start(now_unix_s: u64, hours: f64) -> u64 {
    let length = (hours * 3600.0).ceil() as u64;
    let mut start = now_unix_s - now_unix_s % 86_400 + 6 * 3600;
    while start + length > now_unix_s && start >= 86_400 {
        start -= 86_400;
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::City;

    /// The first three venues are the simulator's defaults, ids are unique, and every prefix
    /// of the list is a valid city.
    #[test]
    fn built_in_venues_are_valid() {
        let defaults: Vec<String> = SimConfig::default()
            .venues
            .into_iter()
            .map(|v| v.id)
            .collect();
        let ours: Vec<String> = venues(3).into_iter().map(|v| v.id).collect();
        assert_eq!(ours, defaults);
        for n in 1..=MAX_VENUES {
            let choice = CityChoice {
                seed: 1,
                phones: 500,
                venues: n,
                infected_share: 0.05,
                hours: 2.0,
            };
            City::new(&config(&choice, 1_748_844_000)).expect("a valid city");
        }
        assert_eq!(venues(100).len(), MAX_VENUES);
    }

    /// The day starts at 06:00 UTC and ends by now: today when it fits, else an earlier day.
    #[test]
    fn day_starts_at_six_and_ends_by_now() {
        let today = 20_000 * 86_400;
        assert_eq!(day_start(today + 23 * 3600, 16.0), today + 6 * 3600);
        assert_eq!(
            day_start(today + 21 * 3600, 16.0),
            today - 86_400 + 6 * 3600
        );
        assert_eq!(day_start(today + 3600, 4.0), today - 86_400 + 6 * 3600);
        assert_eq!(
            day_start(today + 12 * 3600, 48.0),
            today - 2 * 86_400 + 6 * 3600
        );
    }
}
