//! inferlat measures what remote and decentralized AI inference really costs: a scenario
//! file describes a topology of clients, relays and GPU workers joined by emulated links;
//! inferlat builds it from real QUIC endpoints, drives it with a load generator that
//! measures from the scheduled start, runs the same workload on a local-GPU baseline, and
//! writes HdrHistograms, a JSON summary and reports.
//!
//! Data flow (DESIGN §1): [`scenario`] -> [`plan`] -> [`harness`] -> [`record`] -> [`report`].

pub mod calibrate;
pub mod cli;
pub mod clock;
pub mod compute;
pub mod format;
pub mod harness;
pub mod net;
pub mod plan;
pub mod record;
pub mod report;
pub mod scenario;
pub mod topology;
pub mod units;
