//! What a kind checks of a scenario's path: its shape, the layers its workers hold, and the
//! links its route needs. A kind sees the path through a [`PathCheck`] and reports
//! problems at the path, at one of its positions, or at a node's `layers`; the scenario
//! module turns them into located diagnostics.

use super::{Hops, Role, TopologyKind};
use std::collections::HashSet;
use std::ops::Range;

/// What a kind's check sees of a node.
#[derive(Clone, Debug)]
pub struct PathNode<'a> {
    pub name: &'a str,
    pub role: Role,
    /// The layers a worker holds.
    pub layers: Range<u32>,
}

/// Where a path problem lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    /// The path as a whole.
    Path,
    /// The node at this position of the path.
    Position(usize),
    /// The `layers` of the node of this scenario index.
    Layers(usize),
}

/// A scenario's path as its kind checks it: the path's node indices and the nodes they
/// name, the model's layer count, and what the check found. A kind records each link its
/// route needs with [`PathCheck::need`]; the scenario module reports the missing ones.
pub struct PathCheck<'a> {
    pub kind: TopologyKind,
    pub hops: Option<Hops>,
    pub nodes: &'a [PathNode<'a>],
    pub path: &'a [usize],
    /// The model's layer count, when the model is known.
    pub layers: Option<u32>,
    /// (from, to, the path position to point at when it is missing), each needed both ways.
    pub needs: Vec<(usize, usize, usize)>,
    pub problems: Vec<(Where, String)>,
}

impl<'a> PathCheck<'a> {
    pub fn new(
        kind: TopologyKind,
        hops: Option<Hops>,
        nodes: &'a [PathNode<'a>],
        path: &'a [usize],
        layers: Option<u32>,
    ) -> Self {
        PathCheck {
            kind,
            hops,
            nodes,
            path,
            layers,
            needs: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Checks the path: it starts at a client and names no node twice, then its kind's
    /// shape. `None` when the path itself is wrong; the links it needs are in `needs`.
    pub fn run(&mut self) -> Option<()> {
        if self.role(0) != Role::Client {
            let msg = format!(
                "a path starts at a client; \"{}\" is a {}",
                self.name(0),
                self.role(0)
            );
            self.err_at(0, msg);
            return None;
        }
        let mut seen = HashSet::new();
        for i in 0..self.len() {
            if !seen.insert(self.path[i]) {
                let msg = format!("node \"{}\" appears twice in the path", self.name(i));
                self.err_at(i, msg);
            }
        }
        let kind = self.kind;
        kind.check(self)
    }

    pub fn len(&self) -> usize {
        self.path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.path.is_empty()
    }

    /// The role of the node at path position `i`.
    pub fn role(&self, i: usize) -> Role {
        self.nodes[self.path[i]].role
    }

    /// The name of the node at path position `i`.
    pub fn name(&self, i: usize) -> &str {
        self.nodes[self.path[i]].name
    }

    /// A problem with the path as a whole.
    pub fn err_path(&mut self, message: String) {
        self.problems.push((Where::Path, message));
    }

    /// A problem with the node at path position `i`.
    pub fn err_at(&mut self, i: usize, message: String) {
        self.problems.push((Where::Position(i), message));
    }

    /// The path has the wrong shape for its kind.
    pub fn shape_error(&mut self) -> Option<()> {
        let msg = format!(
            "a {} topology's path is {}",
            self.kind,
            self.kind.expected_path()
        );
        self.err_path(msg);
        None
    }

    /// Every node after the client is a worker.
    pub fn all_workers(&self) -> bool {
        (1..self.len()).all(|i| self.role(i) == Role::Worker)
    }

    /// A path of workers after the client, at least two of them.
    pub fn two_workers_or_more(&mut self) -> Option<()> {
        if !self.all_workers() {
            return self.shape_error();
        }
        let n = self.len();
        if n < 3 {
            let msg = format!(
                "a {} topology's path is {}; this one names {}",
                self.kind,
                self.kind.expected_path(),
                if n == 2 { "only 1 worker" } else { "no worker" }
            );
            self.err_path(msg);
            return None;
        }
        Some(())
    }

    /// The route needs a link between path positions `a` and `b` (once for both ways).
    pub fn need(&mut self, a: usize, b: usize) {
        let (x, y) = (self.path[a], self.path[b]);
        if !self
            .needs
            .iter()
            .any(|&(p, q, _)| (p, q) == (x, y) || (p, q) == (y, x))
        {
            self.needs.push((x, y, b));
        }
    }

    /// The route needs a link from path position `from` to each of `to`.
    pub fn need_from(&mut self, from: usize, to: Range<usize>) {
        for i in to {
            self.need(from, i);
        }
    }

    /// The workers at these path positions hold consecutive spans covering the model.
    pub fn consecutive(&mut self, stages: &[usize]) {
        let Some(layers) = self.layers else { return };
        let mut next = 0;
        for &i in stages {
            let span = self.nodes[self.path[i]].layers.clone();
            if span.start != next {
                let msg = format!(
                    "stage \"{}\" holds layers {}..{} but the previous stage ends at layer {next}; stages must hold consecutive spans",
                    self.name(i),
                    span.start,
                    span.end
                );
                self.err_at(i, msg);
                return;
            }
            next = span.end;
        }
        if next != layers {
            self.err_path(format!(
                "the stages cover layers 0..{next}, but the model has {layers} layers"
            ));
        }
    }

    /// Every worker on the path holds the whole model; `what` says who must.
    pub fn whole(&mut self, what: &str) {
        let Some(layers) = self.layers else { return };
        for i in 1..self.len() {
            let node = self.path[i];
            let span = &self.nodes[node].layers;
            if *span != (0..layers) {
                let msg = format!(
                    "worker \"{}\" holds layers {}..{}, but {what} holds all {layers} layers; remove `layers`",
                    self.name(i),
                    span.start,
                    span.end,
                );
                self.problems.push((Where::Layers(node), msg));
            }
        }
    }
}

/// How a worker holds the model, for the memory check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    /// It holds 1/`ways` of each of its layers (a tensor group's slice).
    pub ways: usize,
    /// Whether it holds the LM head: `None` when its span decides (the worker whose span
    /// ends at the model's last layer).
    pub head: Option<bool>,
    /// It may hold no layers at all (a star's host, with `layers = "0..0"`).
    pub may_hold_no_layers: bool,
}

impl Default for Holding {
    fn default() -> Self {
        Holding {
            ways: 1,
            head: None,
            may_hold_no_layers: false,
        }
    }
}
