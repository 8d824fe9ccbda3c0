//! Human-readable text: the result table printed at the end of a run, and the plan that
//! `inferlat validate` prints.

use super::{Results, fmt_ms};
use crate::plan::{Floor, Plan, PlanError};
use crate::record::{Metric, Share, ladder};
use crate::scenario::{Extent, Scenario, units};
use std::fmt::Write as _;
use std::time::Duration;

/// A tax of a metric at a quantile (network, device or total).
type TaxOf<'a> = &'a dyn Fn(Metric, f64) -> Option<f64>;

fn ms(d: Duration) -> String {
    fmt_ms(d.as_secs_f64() * 1e3)
}

/// The result table of one scenario.
pub fn render(r: &Results) -> String {
    let s = r.scenario;
    let mut o = String::new();
    let validity = r.validity();
    let valid = validity.reasons.is_empty();
    if !valid {
        // Said first (DESIGN §11): what follows rests on the requests that survived.
        let _ = writeln!(
            o,
            "\ninvalid: {}: the results below are not results",
            s.name
        );
        for why in &validity.reasons {
            let _ = writeln!(o, "  {why}");
        }
        let _ = writeln!(
            o,
            "  the latencies rest only on the requests that completed; tax and throughput are not shown (raise the limit with [workload] max_failed or --max-failed)"
        );
    }
    let _ = writeln!(
        o,
        "\n{}  (seed {}, {} clock{})",
        s.name,
        s.seed,
        r.measured.clock.name(),
        if r.complete() {
            ""
        } else {
            ", INTERRUPTED: partial results"
        }
    );
    if let Some(d) = &s.description {
        let _ = writeln!(o, "  {}", d.trim());
    }
    if valid {
        tax_lines(&mut o, r);
    }
    let _ = writeln!(
        o,
        "\n  {:<8} {:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7}",
        "metric", "run", "p50", "p90", "p99", "p99.9", "max", "requests", "failed"
    );
    let floors = r.floors();
    for m in [Metric::Ttft, Metric::Tpot, Metric::Itl, Metric::E2e] {
        let mut first = true;
        for (run, out) in r.runs() {
            let rec = &out.record;
            let h = rec.histogram(m);
            let name = if first { m.name() } else { "" };
            first = false;
            // The requests the row rests on: those with a value (tpot and itl need two
            // tokens), and the measured requests that failed.
            let rests_on = match m {
                Metric::Itl => rec.histogram(Metric::Tpot).len(),
                _ => h.len(),
            };
            if h.is_empty() {
                let _ = writeln!(
                    o,
                    "  {name:<8} {run:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {rests_on:>9} {:>7}",
                    "-", "", "", "", "", rec.failed
                );
                continue;
            }
            let l = rec.ladder(m);
            let _ = writeln!(
                o,
                "  {name:<8} {run:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {rests_on:>9} {:>7}",
                fmt_ms(l.p50),
                fmt_ms(l.p90),
                fmt_ms(l.p99),
                fmt_ms(l.p999),
                fmt_ms(l.max),
                rec.failed
            );
        }
        if valid {
            let taxes: [(&str, TaxOf); 3] = [
                ("net tax", &|m, q| r.network_tax(m, q)),
                ("dev tax", &|m, q| r.device_tax(m, q)),
                ("tax", &|m, q| r.tax(m, q)),
            ];
            for (name, tax) in taxes {
                if let (Some(p50), Some(p99)) = (tax(m, 0.5), tax(m, 0.99)) {
                    let _ = writeln!(
                        o,
                        "  {:<8} {:<9} {:>9.2}x {:>10} {:>9.2}x",
                        "", name, p50, "", p99
                    );
                }
            }
        }
        // What physics allows the median request on the topology: no queueing, no loss,
        // no congestion control.
        let f = floors.0;
        let floor = match m {
            Metric::Ttft => f.ttft,
            Metric::Tpot => f.tpot,
            Metric::Itl => f.itl,
            _ => f.e2e,
        };
        let _ = writeln!(
            o,
            "  {:<8} {:<9} {:>10}",
            "",
            "floor",
            fmt_ms(floor.as_secs_f64() * 1e3)
        );
    }
    requests_lines(&mut o, r, valid);
    topology_lines(&mut o, r);
    trailer_lines(&mut o, r);
    o
}

/// The lead of the table: what the network alone costs (the topology against the same
/// devices with no network between them), then what the devices cost (those devices
/// against the baseline's), at p50 and p99.
fn tax_lines(o: &mut String, r: &Results) {
    let metrics = [Metric::Ttft, Metric::Tpot, Metric::E2e];
    let line = |f: &dyn Fn(Metric, f64) -> Option<f64>| -> Option<String> {
        let parts: Vec<String> = metrics
            .iter()
            .filter_map(|&m| {
                Some(format!(
                    "{} {:.2}x p50, {:.2}x p99",
                    m.name(),
                    f(m, 0.5)?,
                    f(m, 0.99)?
                ))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    };
    let _ = writeln!(o);
    match line(&|m, q| r.network_tax(m, q)) {
        Some(l) => {
            let _ = writeln!(
                o,
                "  network tax (topology / colocated: the same devices and layers, no network between them): {l}"
            );
        }
        None if r.measured.colocated.is_none() => {
            let _ = writeln!(
                o,
                "  network tax: not measured (the run had no co-located run of the same devices)"
            );
        }
        None => {
            let _ = writeln!(o, "  network tax: no value (a run measured no request)");
        }
    }
    if let Some(l) = line(&|m, q| r.device_tax(m, q)) {
        let _ = writeln!(
            o,
            "  device tax (colocated / baseline: those devices against the local baseline's): {l}"
        );
    }
}

/// Each run's requests, throughput (over the measured window, failures included; not
/// shown for an invalid run) and errors.
fn requests_lines(o: &mut String, r: &Results, valid: bool) {
    let s = r.scenario;
    let _ = writeln!(o);
    for (run, out) in r.runs() {
        let rec = &out.record;
        let _ = write!(
            o,
            "  {run:<9} {} completed, {} failed of {} measured ({:.1}% failed)",
            rec.completed,
            rec.failed,
            rec.requests(),
            100.0 * rec.failed_fraction()
        );
        if valid {
            let _ = write!(
                o,
                ", {:.2} req/s, {:.1} output tok/s over {:.1} s",
                rec.requests_per_s(),
                rec.output_tokens_per_s(),
                rec.window.as_secs_f64()
            );
            if !s.slo.is_empty() {
                let _ = write!(
                    o,
                    ", goodput {:.2} req/s (SLO {})",
                    rec.goodput_per_s(),
                    slo_text(&s.slo)
                );
            }
        }
        let _ = writeln!(o);
        for (e, n) in &rec.errors {
            let _ = writeln!(o, "            {n} x {e}");
        }
    }
}

/// The objectives of an SLO, as "ttft <= 500 ms, tpot <= 50.0 ms".
fn slo_text(slo: &crate::scenario::Slo) -> String {
    [
        ("ttft", slo.ttft),
        ("tpot", slo.tpot),
        ("itl", slo.itl),
        ("e2e", slo.e2e),
    ]
    .into_iter()
    .filter_map(|(name, d)| Some(format!("{name} <= {}", ms(d?))))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The topology run's breakdown, clients, hedging, handshake and schedule lag.
fn topology_lines(o: &mut String, r: &Results) {
    if let Some(t) = &r.measured.topology {
        let rec = &t.record;
        // The request at each percentile of service time, decomposed as itself: its own
        // queue, compute and network add up to its service time. (Each part's own p99
        // would come from different requests and decompose none.)
        let at: Vec<(&str, crate::record::Parts)> = [("p50", 0.5), ("p99", 0.99)]
            .into_iter()
            .filter_map(|(name, q)| Some((name, rec.request_at(q)?)))
            .collect();
        if !at.is_empty() {
            let _ = writeln!(
                o,
                "\n  where the time goes (topology; the request at each percentile of service time, its own parts):"
            );
            // Software time is a part only where the run had some (`send_cost`, `recv_cost`).
            let shares: Vec<Share> = Share::ALL
                .into_iter()
                .filter(|&sh| sh != Share::Software || rec.has_software())
                .collect();
            for (name, p) in &at {
                let total: Duration = shares.iter().map(|&sh| p.get(sh)).sum();
                let _ = write!(o, "    {name} request, service {}:", ms(p.service));
                for &sh in &shares {
                    let v = p.get(sh);
                    let _ = write!(
                        o,
                        "  {} {} ({:.0}%)",
                        sh.name(),
                        ms(v),
                        100.0 * v.as_secs_f64() / total.as_secs_f64().max(f64::MIN_POSITIVE)
                    );
                }
                let _ = writeln!(o);
            }
            let nodes: Vec<_> = rec.nodes().collect();
            if nodes.len() > 1 {
                for (name, q, c) in nodes {
                    let (q, c) = (ladder(q), ladder(c));
                    let software = rec
                        .node_software(name)
                        .map(|h| {
                            let l = ladder(h);
                            format!(", software p50 {} p99 {}", fmt_ms(l.p50), fmt_ms(l.p99))
                        })
                        .unwrap_or_default();
                    let _ = writeln!(
                        o,
                        "    {name:<14} queue p50 {} p99 {}, compute p50 {} p99 {}{software} (its own clock)",
                        fmt_ms(q.p50),
                        fmt_ms(q.p99),
                        fmt_ms(c.p50),
                        fmt_ms(c.p99)
                    );
                }
            }
        }
        let clients: Vec<_> = rec.clients().collect();
        if clients.len() > 1 {
            for (name, t, e) in clients {
                let (t, e) = (ladder(t), ladder(e));
                let _ = writeln!(
                    o,
                    "  client {name:<14} {} requests: ttft p50 {} p99 {}, e2e p50 {} p99 {}",
                    t.count,
                    fmt_ms(t.p50),
                    fmt_ms(t.p99),
                    fmt_ms(e.p50),
                    fmt_ms(e.p99)
                );
            }
        }
        if rec.extra_copies > 0 || r.plan.hedge_after.is_some() {
            let _ = writeln!(
                o,
                "  hedging: {} extra copies for {} requests ({:.1}% extra load); a later copy answered first {} times",
                rec.extra_copies,
                rec.completed,
                100.0 * rec.extra_copies as f64 / rec.completed.max(1) as f64,
                rec.hedge_wins
            );
        }
        if !r.scenario.faults.is_empty() {
            let f = &rec.faults;
            let _ = writeln!(
                o,
                "  faults: {} injected, {} failovers, {} tokens replayed, {} requests lost to faults, {} datagrams dropped",
                f.injected, f.failovers, f.replayed_tokens, f.lost, f.dropped_datagrams
            );
        }
        if let Some(c) = rec
            .histogram(Metric::Connect)
            .len()
            .checked_sub(1)
            .map(|_| rec.ladder(Metric::Connect))
        {
            let _ = writeln!(o, "  connect (QUIC handshake): {}", fmt_ms(c.max));
        }
        let lag = rec.ladder(Metric::ScheduleLag);
        if lag.count > 0 {
            let _ = writeln!(
                o,
                "  schedule lag: p50 {}, p99 {}, max {}",
                fmt_ms(lag.p50),
                fmt_ms(lag.p99),
                fmt_ms(lag.max)
            );
        }
    }
}

/// The emulator, the links, the floor, the reference and the notes.
fn trailer_lines(o: &mut String, r: &Results) {
    let s = r.scenario;
    let m = r.measured;
    if let Some(h) = m.emulator_lateness.as_ref().filter(|h| !h.is_empty())
        && m.clock == crate::clock::ClockKind::Real
    {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        let _ = writeln!(
            o,
            "  link emulator lateness: p50 {:.1} us, p99 {:.1} us, max {:.1} us over {} datagrams",
            us(0.5),
            us(0.99),
            h.max() as f64 / 1e3,
            h.len()
        );
    }
    let (lost, dropped, sent) = m.links.iter().fold((0, 0, 0), |(l, d, s), x| {
        (l + x.stats.lost, d + x.stats.dropped, s + x.stats.datagrams)
    });
    if lost + dropped > 0 {
        let _ = writeln!(
            o,
            "  links: {lost} datagrams lost by the loss model and {dropped} dropped by full queues, of {sent} sent"
        );
    }
    let (floor, base_floor) = r.floors();
    let _ = writeln!(
        o,
        "  analytic floor ({} prompt, {} output tokens): topology {}{}",
        r.plan.typical.prompt,
        r.plan.typical.output,
        floor_text(&floor),
        base_floor
            .map(|f| format!("; baseline {}", floor_text(&f)))
            .unwrap_or_default()
    );
    if let Some(m) = r.reference_measured()
        && let Some(reference) = &s.reference
    {
        let _ = writeln!(
            o,
            "  reference {} ({} run): published {:.3} {unit}, measured {:.3} {unit}: {} (tolerance {:.0}%; {})",
            reference.metric,
            m.run,
            m.expected,
            m.measured,
            super::summary::verdict(reference.fitted, m.within),
            reference.tolerance * 100.0,
            reference.source,
            unit = m.unit,
        );
        if let Some(note) = &reference.note {
            let _ = writeln!(o, "    why: {}", note.trim());
        }
    }
    let _ = writeln!(
        o,
        "  note: times run from each request's scheduled start, so waiting behind a backlog shows in the tails instead of being hidden by a late send (summary.json: notes, service, schedule_lag)."
    );
    if m.clock == crate::clock::ClockKind::Virtual {
        let _ = writeln!(o, "  note: {}.", super::VIRTUAL_NOTE);
    }
}

fn floor_text(f: &Floor) -> String {
    format!(
        "ttft {}, tpot {}, itl {}, e2e {}",
        ms(f.ttft),
        ms(f.tpot),
        ms(f.itl),
        ms(f.e2e)
    )
}

/// What `inferlat validate` prints for one scenario.
pub fn plan_text(s: &Scenario, plan: &Result<Plan, PlanError>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}: ok  ({})", s.file.display(), s.name);
    let m = &s.model;
    let _ = writeln!(
        o,
        "  model     {}: {} layers, hidden {}, {:.2}B params, {} B/weight, {} of weights",
        m.name,
        m.layers,
        m.hidden,
        m.params / 1e9,
        m.weight_bytes,
        units::format_si(m.total_weight_bytes(), "B")
    );
    let w = &s.workload;
    let warm = match w.warmup {
        Extent::Requests(0) => "no warmup".to_string(),
        e => format!("warmup {e}"),
    };
    let _ = writeln!(
        o,
        "  workload  prompt {} tokens, output {} tokens, {}, measure {}, {warm}",
        w.prompt_tokens, w.output_tokens, w.arrival, w.measure
    );
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(o, "  topology  {} over {}", s.topology.kind, path(s));
            let _ = writeln!(o, "  note      {e}");
            return o;
        }
    };
    for w in &plan.warnings {
        let _ = writeln!(o, "  warning   {w}");
    }
    route_lines(&mut o, plan);
    compute_lines(&mut o, plan);
    let shape = plan.typical;
    let _ = writeln!(
        o,
        "  floor     topology: {}",
        floor_text(&plan.floor(shape))
    );
    for note in &plan.notes {
        let _ = writeln!(o, "  note      {note}");
    }
    if let (Some(b), Some(f)) = (&plan.baseline, plan.baseline_floor(shape)) {
        let _ = writeln!(
            o,
            "  floor     baseline on {}: {}",
            b.device.name,
            floor_text(&f)
        );
    } else {
        let _ = writeln!(
            o,
            "  baseline  none ([baseline] is absent: no latency tax is computed)"
        );
    }
    o
}

/// A tensor group's pattern: its synchronisations per token each way and its root-only work.
fn pattern_line(o: &mut String, plan: &Plan) {
    let p = &plan.pattern;
    let layers = plan
        .nodes
        .first()
        .and_then(|n| n.stage.as_ref())
        .map_or(0, |s| s.layers);
    let (down, up) = p.messages(layers);
    let mut only: Vec<&str> = Vec::new();
    if p.root_only.attention {
        only.push("attention");
    }
    if p.root_only.lm_head {
        only.push("the LM head");
    }
    let only = if only.is_empty() {
        String::new()
    } else {
        format!("; on the root only: {}", only.join(" and "))
    };
    let _ = writeln!(
        o,
        "  pattern   {}: per token {down} messages from the root to each member, {up} back{only}",
        p.name
    );
}

/// The route, the clients, hedging and the bytes on every link.
fn route_lines(o: &mut String, plan: &Plan) {
    let hops = plan.topology().route_note(&plan.route);
    let _ = writeln!(
        o,
        "  route     {}{hops}: {}",
        plan.kind,
        plan.path.join(" -> ")
    );
    if !plan.tensor.is_empty() {
        pattern_line(o, plan);
    }
    if plan.topology().takes_star_pattern() && !plan.star.is_default() {
        let p = &plan.star;
        let _ = writeln!(
            o,
            "  pattern   {}: per token {} calls to each remote stage, {} of them waiting for a reply",
            p.name,
            p.calls.len(),
            p.round_trips()
        );
    }
    if plan.clients.len() > 1 {
        let total: f64 = plan.clients.iter().map(|c| c.share).sum();
        let list: Vec<String> = plan
            .clients
            .iter()
            .map(|c| format!("{} {:.0} %", c.name, 100.0 * c.share / total))
            .collect();
        let _ = writeln!(
            o,
            "  clients   {} (each takes the same route)",
            list.join(", ")
        );
    }
    if let Some(h) = plan.hedge_after {
        let when = match h {
            crate::scenario::HedgeAfter::Delay(d) => units::format_duration(d),
            crate::scenario::HedgeAfter::Percentile(q) => {
                format!("the p{q} of recent times to first token (after 20 requests)")
            }
        };
        let _ = writeln!(
            o,
            "  hedging   next copy to the next replica after {when}; the first to answer wins"
        );
    }
    let name = |i: usize| {
        plan.nodes
            .iter()
            .find(|n| n.index == i)
            .map_or("?", |n| n.name.as_str())
    };
    for &(stage, r) in &plan.standby {
        let _ = writeln!(
            o,
            "  standby   {} holds {}'s span: a session that fails there moves to it and replays its tokens (docs/faults.md)",
            name(r),
            name(stage)
        );
    }
    let shape = plan.typical;
    let _ = writeln!(
        o,
        "  bytes     per link: prefill of {} tokens / each further token (frames; QUIC adds its headers)",
        shape.prompt
    );
    for hop in &plan.hops {
        let _ = writeln!(
            o,
            "  link      {} -> {}: {}; {} / {}",
            hop.from,
            hop.to,
            hop.link.describe(),
            units::format_si(hop.prefill_bytes as f64, "B"),
            units::format_si(hop.token_bytes as f64, "B"),
        );
        for c in &hop.changes {
            let _ = writeln!(
                o,
                "            from {} into the measured phase: {}",
                units::format_duration(c.at),
                c.params.describe()
            );
        }
    }
}

/// What each node computes for the median request, and what batching gives.
fn compute_lines(o: &mut String, plan: &Plan) {
    let shape = plan.typical;
    for n in &plan.nodes {
        let Some(stage) = &n.stage else { continue };
        let c = stage.request(shape.prompt, shape.output);
        let what = match n.part.is_slice() {
            true => {
                format!(
                    "a 1/{} slice of all {} layers",
                    plan.nodes.len(),
                    stage.layers
                )
            }
            false => format!("{} layers", stage.layers),
        };
        // A star host also runs the LM head (and embeddings): its time is part of the step.
        let (what, head) = match &n.head {
            Some(h) => (
                format!("{what} and the LM head"),
                Some(h.request(shape.prompt, shape.output)),
            ),
            None => (what, None),
        };
        let prefill = c.prefill + head.as_ref().map_or(Duration::ZERO, |h| h.prefill);
        let decode = c.decode.first().map(|d| {
            *d + head
                .as_ref()
                .and_then(|h| h.decode.first().copied())
                .unwrap_or(Duration::ZERO)
        });
        let _ = writeln!(
            o,
            "  compute   {} on {} ({what}): prefill {}, decode {} per token",
            n.name,
            stage.device.name,
            ms(prefill),
            decode.map(ms).unwrap_or_else(|| "-".into()),
        );
    }
    for c in &plan.clients {
        if let Some(head) = &c.head {
            let r = head.request(shape.prompt, shape.output);
            let _ = writeln!(
                o,
                "  compute   {} on {} (embeddings and LM head): prefill {}, decode {} per token",
                c.name,
                head.device.name,
                ms(r.prefill),
                r.decode
                    .first()
                    .map(|d| ms(*d))
                    .unwrap_or_else(|| "-".into()),
            );
        }
    }
    if let Some(n) = plan
        .nodes
        .iter()
        .find(|n| n.max_batch > 1 && n.stage.is_some())
    {
        let stage = n.stage.as_ref().expect("checked");
        let contexts = vec![shape.prompt.saturating_add(1); n.max_batch as usize];
        let _ = writeln!(
            o,
            "  batching  {}: up to {} requests decode together: a full batch's step takes {} ({} per token of throughput)",
            n.name,
            n.max_batch,
            ms(stage.decode_batch(&contexts)),
            ms(stage.decode_batch(&contexts) / n.max_batch)
        );
    }
}

fn path(s: &Scenario) -> String {
    s.topology
        .path
        .iter()
        .map(|&i| s.nodes[i].name.as_str())
        .collect::<Vec<_>>()
        .join(" -> ")
}
