//! Warnings about what a spec declares but never uses, computed once
//! everything else is checked: W001 (a device no route reaches and no
//! ingress lists), W002 (an unused egress program), W003 (an unused group),
//! W005 (`on_miss` overridden by `route default`).

use super::*;

impl Checker {
    pub(super) fn warnings(
        &mut self,
        items: &Items,
        routes: &[RouteDef],
        default: Option<Target>,
        groups: &[GroupDef],
    ) {
        let mut reached_devices: HashSet<usize> = HashSet::new();
        let mut reached_groups: HashSet<usize> = HashSet::new();
        for target in routes.iter().map(|r| r.target).chain(default) {
            match target {
                Target::Device(d) => {
                    reached_devices.insert(d);
                }
                Target::Group(g) => {
                    reached_groups.insert(g);
                    reached_devices.extend(groups.get(g).map(|g| g.members.clone()).unwrap_or_default());
                }
            }
        }
        // A device in a group is spoken for: if no route targets the group,
        // the group's own warning (W003) says so, once.
        for group in groups {
            reached_devices.extend(group.members.iter().copied());
        }
        // A name that failed to resolve but is a near miss of a declared one
        // (`donwlink`) counts as a use of that one: the typo is the error,
        // and what it meant is not also unused.
        let resolve = |name: &str| {
            let near =
                || self.near(name, self.targets.keys().map(String::as_str)).and_then(|n| self.targets.get(n));
            self.targets.get(name).or_else(near).map(|(t, _)| *t)
        };
        // Routes whose key or target is an error still count: no warning on
        // top of the error.
        for route in &items.routes {
            match resolve(&route.target.name) {
                Some(Target::Device(d)) => {
                    reached_devices.insert(d);
                }
                Some(Target::Group(g)) => {
                    reached_groups.insert(g);
                    reached_devices.extend(groups.get(g).map(|g| g.members.clone()).unwrap_or_default());
                }
                None => {}
            }
        }
        // Every device named in an `on` list, even one whose block had an
        // error: a broken ingress block must not also cause warnings.
        let ingress_on: HashSet<usize> = items
            .ingress
            .iter()
            .flat_map(|i| i.settings.members.iter())
            .filter(|s| s.name.name == "on")
            .flat_map(|s| match &s.value.kind {
                ValueKind::List(items) => items.iter().collect(),
                _ => vec![&s.value],
            })
            .filter_map(|v| match &v.kind {
                ValueKind::Path(p) => p.as_name().and_then(|n| resolve(&n.name)),
                _ => None,
            })
            .filter_map(|t| match t {
                Target::Device(d) => Some(d),
                Target::Group(_) => None,
            })
            .collect();
        // Without an ingress block, or with one that has no `on`, which
        // devices receive traffic is unknown (and already an error).
        let ingress_known = !items.ingress.is_empty()
            && items.ingress.iter().all(|i| {
                i.settings.members.iter().any(|s| match &s.value.kind {
                    ValueKind::List(devices) => s.name.name == "on" && !devices.is_empty(),
                    ValueKind::Path(_) => s.name.name == "on",
                    _ => false,
                })
            });
        for (i, device) in items.devices.iter().enumerate() {
            let declared = self.targets.get(&device.name.name).is_some_and(|(t, _)| *t == Target::Device(i))
                && !self.misnamed.contains(&device.name.name);
            if declared && ingress_known && !reached_devices.contains(&i) && !ingress_on.contains(&i) {
                self.error(
                    Diagnostic::new(
                        Code::UnreachedDevice,
                        device.name.span,
                        format!("no route reaches device `{}`", device.name.name),
                    )
                    .label("never a target, never an ingress")
                    .help("route some keys to it, add it to a group or to `ingress.on`, or remove it"),
                );
            }
        }
        for (i, group) in items.groups.iter().enumerate() {
            let declared = self.targets.get(&group.name.name).is_some_and(|(t, _)| *t == Target::Group(i))
                && !self.misnamed.contains(&group.name.name);
            if declared && !reached_groups.contains(&i) {
                self.error(
                    Diagnostic::new(
                        Code::UnusedGroup,
                        group.name.span,
                        format!("no route targets group `{}`", group.name.name),
                    )
                    .label("unused group")
                    .help(format!("route some keys to it (`route KEY -> {}`) or remove it", group.name.name)),
                );
            }
        }
        let used: HashSet<String> = items
            .devices
            .iter()
            .flat_map(|d| d.settings.members.iter())
            .filter(|s| s.name.name == "egress")
            .filter_map(|s| match &s.value.kind {
                ValueKind::Path(p) => p.as_name().map(|n| n.name.as_str()),
                ValueKind::Call(c) => c.callee.as_name().map(|n| n.name.as_str()),
                _ => None,
            })
            .map(|name| match self.programs.contains_key(name) {
                true => name.to_string(),
                false => {
                    self.near(name, self.programs.keys().map(String::as_str)).unwrap_or(name).to_string()
                }
            })
            .collect();
        for (i, program) in items.programs.iter().enumerate() {
            let declared = self.programs.get(&program.name.name) == Some(&i)
                && !self.misnamed.contains(&program.name.name);
            if declared && !used.contains(&program.name.name) {
                self.error(
                    Diagnostic::new(
                        Code::UnusedProgram,
                        program.name.span,
                        format!("no device uses egress program `{}`", program.name.name),
                    )
                    .label("unused program")
                    .help(format!(
                        "attach it to a device with `egress = {}` or remove it",
                        program.name.name
                    )),
                );
            }
        }
        if let (Some(default_route), Some(table)) =
            (items.routes.iter().find(|r| matches!(r.key, ast::RouteKey::Default(_))), items.tables.first())
        {
            if let Some(on_miss) = table.settings.members.iter().find(|s| s.name.name == "on_miss") {
                self.error(
                    Diagnostic::new(
                        Code::OnMissOverridden,
                        on_miss.span,
                        "`on_miss` has no effect: `route default` takes every miss",
                    )
                    .label("ignored")
                    .also(default_route.span, "the default route")
                    .help("remove `on_miss`, or remove `route default` to use it"),
                );
            }
        }
    }
}
