//! AST → [`Model`]: resolves names, types values, and reports every error
//! and warning of a spec, in source order.
//!
//! Each rule of the language lives in exactly one function of this module's
//! files, and emits exactly one kind of diagnostic ([`Code`]). A rule that
//! fails does not stop the others: the checker carries on with what it
//! could make sense of and skips only the checks that depend on the broken
//! part (a route key is not type-checked against a table key that is itself
//! broken), so that one mistake gives one diagnostic, not a cascade.
//!
//! One `Checker` is shared by a file per rule family, each adding its own
//! `impl Checker` block: `names` (declarations and lookups), `settings`,
//! `table`, `programs`, `values` (typing values, shared), `devices` (with
//! groups and ingress), `routes`, `spec_tests` (`test` blocks) and
//! `warnings`. This file holds the checker's state and [`check`], which
//! runs the families in order.

use crate::ast::{self, Block, CondKind, Ident, Span, StmtKind, TestStmtKind, Value, ValueKind};
use crate::diagnostic::{self, Code, Diagnostic};
use crate::fields::{Field, Header, LayerKind, Ty};
use crate::model::*;
use std::collections::{HashMap, HashSet};

mod devices;
mod names;
mod programs;
mod routes;
mod settings;
mod spec_tests;
mod table;
mod values;
mod warnings;

pub(crate) use names::name_problem;
pub use names::MAX_NAME_LEN;
pub use programs::MAX_PROGRAM_SIZE;

/// The result of checking: the model when there is no error, and every
/// diagnostic (warnings included) in source order.
#[derive(Debug)]
pub struct Checked {
    pub model: Option<Model>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn check(spec: &ast::Spec) -> Checked {
    let mut checker = Checker::default();
    let model = checker.spec(spec);
    let mut diagnostics = checker.diagnostics;
    diagnostic::sort(&mut diagnostics);
    let model = if diagnostics.iter().any(Diagnostic::is_error) { None } else { model };
    Checked { model, diagnostics }
}

#[derive(Default)]
struct Checker {
    diagnostics: Vec<Diagnostic>,
    /// Devices and groups share one namespace: a route target names either.
    targets: HashMap<String, (Target, Span)>,
    programs: HashMap<String, usize>,
    /// For each program, its parameters that end up in a VLAN id (their
    /// arguments must be at most 4095).
    vlan_params: Vec<HashSet<usize>>,
    /// For each program, its parameters whose type is unknown (E028): their
    /// uses are not type-checked, so the one mistake is one error.
    untyped_params: Vec<HashSet<usize>>,
    /// Where `table.key` was written, to point at it from route errors.
    key_span: Option<Span>,
    /// Declared names that are already an error (E003): they still resolve,
    /// so that every use of one is not an error too, but get no warning.
    misnamed: HashSet<String>,
    /// Declared names compared so far for "did you mean" (see `near`).
    near_miss_spent: std::cell::Cell<usize>,
}

/// The items of a spec, sorted by kind, in source order.
#[derive(Default)]
struct Items<'a> {
    tables: Vec<&'a ast::Table>,
    devices: Vec<&'a ast::Device>,
    programs: Vec<&'a ast::Egress>,
    groups: Vec<&'a ast::Group>,
    ingress: Vec<&'a ast::Ingress>,
    routes: Vec<&'a ast::Route>,
    tests: Vec<&'a ast::Test>,
}

impl Checker {
    fn error(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn spec(&mut self, spec: &ast::Spec) -> Option<Model> {
        let mut items = Items::default();
        for item in &spec.items {
            match item {
                ast::Item::Table(t) => items.tables.push(t),
                ast::Item::Device(d) => items.devices.push(d),
                ast::Item::Egress(e) => items.programs.push(e),
                ast::Item::Group(g) => items.groups.push(g),
                ast::Item::Ingress(i) => items.ingress.push(i),
                ast::Item::Route(r) => items.routes.push(r),
                ast::Item::Test(t) => items.tests.push(t),
            }
        }
        self.declare(&items);

        let table = self.table(&items.tables);
        let programs: Vec<ProgramDef> = items.programs.iter().map(|p| self.program(p)).collect();
        let devices: Vec<Option<DeviceDef>> =
            items.devices.iter().map(|d| self.device(d, &items.programs, &programs)).collect();
        self.distinct_interfaces(&devices, &items.devices);
        self.device_count(&items.devices);
        let groups: Vec<GroupDef> = items.groups.iter().map(|g| self.group(g)).collect();
        let ingress = self.ingress(&items.ingress);
        let (routes, default_route) = self.routes(&items.routes, table.as_ref());
        self.dead_routes(&routes, ingress.as_ref());
        let tests = self.tests(&items.tests, ingress.as_ref());
        self.warnings(&items, &routes, default_route, &groups);

        Some(Model {
            table: table?,
            devices: devices.into_iter().collect::<Option<Vec<_>>>()?,
            programs,
            groups,
            ingress: ingress?,
            routes,
            default_route,
            tests,
        })
    }
}

/// A value as the user would write it, for messages.
pub fn value_text(value: &Value) -> String {
    crate::fmt::value(value)
}

/// The candidate closest to `name`, if it is close enough to be a typo.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates.map(|c| (edit_distance(name, c), c)).filter(|(d, _)| *d <= limit).min().map(|(_, c)| c)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to
/// `b`: a swap is one typo (`bleu` for `blue`), not two.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]));
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests;
