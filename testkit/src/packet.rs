//! Test frames: the runtime's packet builder and parser
//! ([`devmapc_runtime::packet`]), which `devmapc test` uses too; re-exported
//! here so tests keep writing `devmapc_testkit::packet::Frame`.

pub use devmapc_runtime::packet::*;
