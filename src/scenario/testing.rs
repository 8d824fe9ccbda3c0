//! Scenario texts for tests: one builder, so the unit tests and the integration tests
//! (`tests/*.rs`) write their scenarios the same way instead of each keeping its own
//! inline TOML.
//!
//! ```
//! use inferlat::scenario::testing::ScenarioText;
//! let text = ScenarioText::new("t")
//!     .client("c")
//!     .worker("gpu", "a100-80g", "")
//!     .link("c", "gpu", "rtt = \"10ms\"")
//!     .build();
//! assert!(text.contains("between = [\"c\", \"gpu\"]"));
//! ```

use super::{ProfileLibrary, Scenario, ScenarioError};
use std::fmt::Write;
use std::path::Path;

/// A scenario file under construction. Every part has a small default (Llama 2 7B, a
/// 16-token prompt, 4 output tokens, Poisson arrivals at 1 request/s, 10 requests) and
/// nodes, links and tables are written in the order they are added.
#[derive(Clone, Debug)]
pub struct ScenarioText {
    top: String,
    model: String,
    workload: String,
    body: String,
}

impl ScenarioText {
    /// A scenario called `name` with the default model and workload and no nodes.
    pub fn new(name: &str) -> Self {
        ScenarioText {
            top: format!("name = \"{name}\"\n"),
            model: "preset = \"llama-2-7b\"\n".into(),
            workload: "prompt_tokens = 16\noutput_tokens = 4\narrival = { kind = \"poisson\", rate = 1.0 }\nrequests = 10\n".into(),
            body: String::new(),
        }
    }

    /// Adds top-level fields (`seed = 3`, `description = "..."`).
    pub fn top(mut self, fields: &str) -> Self {
        push_line(&mut self.top, fields);
        self
    }

    /// Replaces the `[model]` table's fields.
    pub fn model(mut self, fields: &str) -> Self {
        self.model = String::new();
        push_line(&mut self.model, fields);
        self
    }

    /// The model preset.
    pub fn preset(self, name: &str) -> Self {
        self.model(&format!("preset = \"{name}\""))
    }

    /// Replaces the `[workload]` table's fields.
    pub fn workload(mut self, fields: &str) -> Self {
        self.workload = String::new();
        push_line(&mut self.workload, fields);
        self
    }

    /// A `[[node]]` with the role and any further fields.
    pub fn node(mut self, name: &str, role: &str, fields: &str) -> Self {
        let _ = writeln!(self.body, "[[node]]\nname = \"{name}\"\nrole = \"{role}\"");
        push_line(&mut self.body, fields);
        self
    }

    /// A client node.
    pub fn client(self, name: &str) -> Self {
        self.node(name, "client", "")
    }

    /// A relay node.
    pub fn relay(self, name: &str) -> Self {
        self.node(name, "relay", "")
    }

    /// A worker on the device profile `device`, with any further fields.
    pub fn worker(self, name: &str, device: &str, fields: &str) -> Self {
        let fields = format!("device = \"{device}\"\n{fields}");
        self.node(name, "worker", &fields)
    }

    /// A `[[link]]` between `a` and `b` (both directions), with its parameters.
    pub fn link(mut self, a: &str, b: &str, fields: &str) -> Self {
        let _ = writeln!(self.body, "[[link]]\nbetween = [\"{a}\", \"{b}\"]");
        push_line(&mut self.body, fields);
        self
    }

    /// A `[[link]]` in one direction, `from` to `to`, with its parameters: two of them
    /// make a link whose directions differ.
    pub fn one_way(mut self, from: &str, to: &str, fields: &str) -> Self {
        let _ = writeln!(self.body, "[[link]]\nfrom = \"{from}\"\nto = \"{to}\"");
        push_line(&mut self.body, fields);
        self
    }

    /// `[topology]` of `kind` along `path`, with any further fields.
    pub fn topology(mut self, kind: &str, path: &[&str], fields: &str) -> Self {
        let names: Vec<String> = path.iter().map(|n| format!("\"{n}\"")).collect();
        let _ = writeln!(
            self.body,
            "[topology]\nkind = \"{kind}\"\npath = [{}]",
            names.join(", ")
        );
        push_line(&mut self.body, fields);
        self
    }

    /// Any further TOML, written as given (a `[slo]` table, a `[[link.change]]`).
    pub fn raw(mut self, toml: &str) -> Self {
        push_line(&mut self.body, toml);
        self
    }

    /// The scenario's text.
    pub fn build(&self) -> String {
        format!(
            "{}[model]\n{}[workload]\n{}{}",
            self.top, self.model, self.workload, self.body
        )
    }

    /// Parses and validates the text as `t.toml` with the built-in profiles.
    pub fn parse(&self) -> Result<Scenario, ScenarioError> {
        super::parse(
            Path::new("t.toml"),
            &self.build(),
            &ProfileLibrary::built_in(),
        )
    }
}

/// The classic test topology: one client and one worker joined by one link.
pub fn direct(name: &str, device: &str, link: &str) -> ScenarioText {
    ScenarioText::new(name)
        .client("client")
        .worker("gpu", device, "")
        .link("client", "gpu", link)
}

fn push_line(out: &mut String, text: &str) {
    let text = text.trim_matches('\n');
    if !text.is_empty() {
        out.push_str(text);
        out.push('\n');
    }
}
