//! Does this process have what kernel-facing tests need?
//!
//! Tests that load BPF programs or build network namespaces start with
//! [`require_privileged!`](crate::require_privileged). Without privileges the
//! test prints a loud `SKIPPED` line and returns, unless
//! `DEVMAPC_REQUIRE_PRIVILEGED=1` (CI sets it), where it fails instead: a CI
//! run that silently skipped every kernel test would prove nothing.

/// Environment variable that turns a skip into a failure when set to `1`.
pub const REQUIRE_ENV: &str = "DEVMAPC_REQUIRE_PRIVILEGED";

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// True when the effective capabilities include CAP_BPF and CAP_NET_ADMIN
/// (root has both). Read from `CapEff` in `/proc/self/status`.
///
/// Creating network namespaces also needs CAP_SYS_ADMIN, which root has; see
/// [`can_create_netns`].
pub fn privileged() -> bool {
    effective_caps().is_some_and(|caps| has(caps, CAP_BPF) && has(caps, CAP_NET_ADMIN))
}

/// True when CAP_SYS_ADMIN is effective too (`ip netns add` mounts).
pub fn can_create_netns() -> bool {
    privileged() && effective_caps().is_some_and(|caps| has(caps, CAP_SYS_ADMIN))
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// The `CapEff` mask of this process, if `/proc/self/status` can be read.
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// What a test without privileges does.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Privileged: run the test.
    Run,
    /// Not privileged and skipping allowed: print the line and return.
    Skip(String),
    /// Not privileged and `DEVMAPC_REQUIRE_PRIVILEGED=1`: fail with this.
    Fail(String),
}

/// Decide for `test` given the privilege and the value of
/// `DEVMAPC_REQUIRE_PRIVILEGED`. Used by [`require_privileged!`](crate::require_privileged).
pub fn verdict(test: &str, privileged: bool, require_env: Option<&str>) -> Verdict {
    if privileged {
        Verdict::Run
    } else if require_env.map(str::trim) == Some("1") {
        Verdict::Fail(format!(
            "{test}: needs root / CAP_BPF + CAP_NET_ADMIN, and {REQUIRE_ENV}=1 forbids skipping it"
        ))
    } else {
        Verdict::Skip(format!("SKIPPED (needs root / CAP_BPF + CAP_NET_ADMIN): {test}"))
    }
}

/// The name of the running test: libtest names each test's thread after it.
pub fn current_test_name(fallback: &str) -> String {
    std::thread::current().name().filter(|name| *name != "main").unwrap_or(fallback).to_string()
}

/// Print a skip line straight to the process's stderr: `eprintln!` inside a
/// test is captured by the test harness and shown only for failures, and a
/// skip must be seen.
pub fn announce_skip(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "\n*** {line} ***\n");
}

/// Put first in a test that needs the kernel (the test must return `()`).
///
/// Privileged: does nothing. Otherwise prints
/// `SKIPPED (needs root / CAP_BPF + CAP_NET_ADMIN): <test>` to stderr and
/// returns from the test, or panics when `DEVMAPC_REQUIRE_PRIVILEGED=1`.
#[macro_export]
macro_rules! require_privileged {
    () => {
        match $crate::privileged::verdict(
            &$crate::privileged::current_test_name(module_path!()),
            $crate::privileged::privileged(),
            ::std::env::var($crate::privileged::REQUIRE_ENV).ok().as_deref(),
        ) {
            $crate::privileged::Verdict::Run => {}
            $crate::privileged::Verdict::Skip(line) => {
                $crate::privileged::announce_skip(&line);
                return;
            }
            $crate::privileged::Verdict::Fail(message) => panic!("{}", message),
        }
    };
}

/// Makes `cmd` run as `nobody` (uid and gid 65534), which leaves it no
/// capability: for tests of what devmapc says without privileges.
pub fn as_nobody(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(has(caps, CAP_BPF) && has(caps, CAP_NET_ADMIN) && has(caps, CAP_SYS_ADMIN));
        let caps = parse_cap_eff("CapEff:\t0000000000001000\n").unwrap();
        assert!(has(caps, CAP_NET_ADMIN) && !has(caps, CAP_BPF));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict("t", true, Some("1")), Verdict::Run);
        assert_eq!(
            verdict("t", false, None),
            Verdict::Skip("SKIPPED (needs root / CAP_BPF + CAP_NET_ADMIN): t".into())
        );
        assert!(matches!(verdict("t", false, Some("0")), Verdict::Skip(_)));
        assert!(matches!(verdict("t", false, Some("1")), Verdict::Fail(_)));
    }

    #[test]
    fn names_the_running_test() {
        assert!(current_test_name("fallback").ends_with("names_the_running_test"));
    }
}
