//! Test frames: the test engine's packet builder and parser
//! ([`devmapc_spectest::packet`]), which `devmapc test` uses too; re-exported
//! here so tests keep writing `devmapc_testkit::packet::Frame`.

pub use devmapc_spectest::packet::*;
