//! `[quic]`: the transport settings a scenario changes on purpose.

use super::Context;
use crate::format::format_duration;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawQuic;
use crate::scenario::units::{Bytes, Dur};
use crate::scenario::{Congestion, DEFAULT_IDLE_TIMEOUT, Quic};
use std::time::Duration;

/// The settings the table gives; the rest keep their defaults.
pub(super) fn check(cx: &mut Context, raw: Option<&RawQuic>) -> Quic {
    match raw {
        None => Quic::default(),
        Some(q) => check_at(cx, q, FieldPath::root().key("quic")),
    }
}

/// The settings a `[quic]`-like table at `qp` gives (a link's `transport` too).
pub(super) fn check_at(cx: &mut Context, q: &RawQuic, qp: FieldPath) -> Quic {
    let congestion = q.congestion.as_deref().and_then(|c| {
        let found = Congestion::parse(c);
        if found.is_none() {
            cx.err(
                qp.key("congestion"),
                format!(
                    "unknown congestion controller \"{c}\"; quinn offers: {}",
                    Congestion::NAMES.join(", ")
                ),
            );
        }
        found
    });
    let idle = q.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |i| i.get());
    if let Some(k) = q.keep_alive
        && k.get() >= idle
    {
        cx.err(
            qp.key("keep_alive"),
            format!(
                "keep_alive {} is not shorter than idle_timeout {}: the connection would time out between keep-alives",
                format_duration(k.get()),
                format_duration(idle)
            ),
        );
    }
    if let Some(d) = q.max_ack_delay
        && d.get() >= Duration::from_millis(1 << 14)
    {
        cx.err(
            qp.key("max_ack_delay"),
            format!(
                "max_ack_delay {} is too long: QUIC's acknowledgement delays are below 2^14 ms (16.384 s, RFC 9000 §18.2)",
                format_duration(d.get())
            ),
        );
    }
    Quic {
        initial_rtt: positive(cx, &qp, q.initial_rtt, "initial_rtt"),
        initial_window: window(cx, &qp, q.initial_window, "initial_window", 2400),
        stream_receive_window: window(
            cx,
            &qp,
            q.stream_receive_window,
            "stream_receive_window",
            1200,
        ),
        receive_window: window(cx, &qp, q.receive_window, "receive_window", 1200),
        idle_timeout: positive(cx, &qp, q.idle_timeout, "idle_timeout"),
        keep_alive: positive(cx, &qp, q.keep_alive, "keep_alive"),
        congestion,
        warm: q.warm,
        slow_start_after_idle: q.slow_start_after_idle,
        nagle: q.nagle,
        max_ack_delay: positive(cx, &qp, q.max_ack_delay, "max_ack_delay"),
    }
}

/// A time that must be above zero.
fn positive(cx: &mut Context, qp: &FieldPath, d: Option<Dur>, key: &str) -> Option<Duration> {
    d.map(|d| {
        if d.get().is_zero() {
            cx.err(qp.key(key), format!("{key} must be greater than zero"));
        }
        d.get()
    })
}

/// A window of at least `least` bytes that QUIC's variable-length integers can carry.
fn window(
    cx: &mut Context,
    qp: &FieldPath,
    b: Option<Bytes>,
    key: &str,
    least: u64,
) -> Option<u64> {
    b.map(|b| {
        let v = b.as_u64();
        if v < least {
            cx.err(
                qp.key(key),
                format!("{key} of {v} B is too small: at least {least} B"),
            );
        } else if v >= 1 << 62 {
            cx.err(
                qp.key(key),
                format!("{key} is past QUIC's largest value (2^62 - 1)"),
            );
        }
        v
    })
}
