//! Validation of a parsed scenario file into a [`Scenario`]: one function per table, each
//! over a [`Context`] that collects every problem with the field it is about, so one run
//! reports them all.

mod baseline;
mod engine;
mod links;
mod model;
mod nodes;
mod ports;
mod quic;
mod reference;
mod slo;
#[cfg(test)]
mod tests;
mod topology;
pub(super) mod workload;

use super::diagnostic::{FieldPath, Problem};
use super::file::{RawDevice, RawScenario};
use super::profile::{DeviceProfile, ProfileLibrary};
use super::{Node, Problems, Scenario, Workload};
use std::path::{Path, PathBuf};
pub use workload::{phase_too_long, too_many_requests};

/// What every table's check shares: where the profiles and traces are, and the problems
/// found so far.
pub(in crate::scenario) struct Context<'a> {
    pub profiles: &'a ProfileLibrary,
    /// The scenario file's folder, where its traces are.
    pub base_dir: &'a Path,
    problems: Problems,
}

impl<'a> Context<'a> {
    fn new(profiles: &'a ProfileLibrary, base_dir: &'a Path) -> Self {
        Context {
            profiles,
            base_dir,
            problems: Problems::new(),
        }
    }

    /// Records a problem with the field it is about.
    pub fn err(&mut self, path: FieldPath, message: String) {
        self.problems.push(Problem::new(path, message));
    }

    /// How many problems have been found so far.
    pub fn found(&self) -> usize {
        self.problems.len()
    }

    /// The node called `name`, or a problem at `path` that lists the nodes there are.
    pub fn node(&mut self, nodes: &[Node], name: &str, path: FieldPath) -> Option<usize> {
        let ix = nodes.iter().position(|n| n.name == name);
        if ix.is_none() {
            self.err(path, unknown_node(nodes, name));
        }
        ix
    }

    /// A device by profile name or inline table, each of its problems at its field.
    pub fn device(&mut self, d: &RawDevice, path: FieldPath) -> Option<DeviceProfile> {
        match d {
            RawDevice::Named(name) => match self.profiles.load(name) {
                Ok((p, _)) => Some(p),
                Err(e) => {
                    self.err(path, e);
                    None
                }
            },
            RawDevice::Inline(p) => {
                let mut p = (**p).clone();
                if p.name.is_empty() {
                    p.name = "inline".into();
                }
                let problems = p.check();
                for (field, msg) in &problems {
                    let mut fp = path.clone();
                    for k in field.split('.') {
                        fp = fp.key(k);
                    }
                    self.err(fp, msg.clone());
                }
                problems.is_empty().then_some(p)
            }
        }
    }
}

/// The message for a name that is no node's.
fn unknown_node(nodes: &[Node], name: &str) -> String {
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    format!("unknown node \"{name}\"; nodes are: {}", names.join(", "))
}

/// Whether a scenario or node name is 1-64 characters of a-z, 0-9 and -.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Turns a parsed file into a checked scenario, collecting every problem.
pub(super) fn validate(
    raw: RawScenario,
    profiles: &ProfileLibrary,
    base_dir: &Path,
) -> Result<Scenario, Problems> {
    let mut cx = Context::new(profiles, base_dir);
    if !valid_name(&raw.name) {
        cx.err(
            FieldPath::root().key("name"),
            format!(
                "invalid name \"{}\": use 1-64 characters of a-z, 0-9 and -",
                raw.name
            ),
        );
    }
    let model = model::check(&mut cx, &raw.model);
    let (measure, warmup) = workload::check(&mut cx, &raw.workload);
    let nodes = nodes::check(&mut cx, &raw.nodes, model.as_ref());
    let ports = ports::check(&mut cx, &raw.ports);
    let links = links::check(&mut cx, &raw.links, &nodes, &ports);
    // A route is checked only when the nodes and links it uses are sound.
    let sound = cx.found() == 0;
    let topology = topology::check(
        &mut cx,
        raw.topology.as_ref(),
        &nodes,
        &links,
        model.as_ref(),
        sound,
    );
    nodes::check_weights(&mut cx, &raw.nodes, &nodes, model.as_ref(), &topology);
    let baseline = baseline::check(&mut cx, raw.baseline.as_ref(), model.as_ref());
    let slo = slo::check(&mut cx, raw.slo.as_ref());
    let quic = quic::check(&mut cx, raw.quic.as_ref());
    let reference = reference::check(&mut cx, raw.reference.as_ref(), raw.baseline.is_some());
    let faults = super::fault::check(&mut cx, &raw.faults, &nodes, &links, measure);

    let (Some(model), Some(measure)) = (model, measure) else {
        return Err(cx.problems);
    };
    if !cx.problems.is_empty() {
        return Err(cx.problems);
    }
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        seed: raw.seed,
        file: PathBuf::new(),
        sha256: String::new(),
        text_sha256: String::new(),
        overrides: Default::default(),
        model,
        workload: Workload {
            prompt_tokens: raw.workload.prompt_tokens.0,
            output_tokens: raw.workload.output_tokens.0,
            arrival: raw.workload.arrival.0,
            measure,
            warmup,
            max_failed: raw
                .workload
                .max_failed
                .map_or(crate::scenario::DEFAULT_MAX_FAILED, |f| f.get()),
        },
        nodes,
        links,
        ports,
        topology: topology.topology,
        baseline,
        slo,
        reference,
        quic,
        faults,
    })
}
