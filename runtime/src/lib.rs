//! The devmapc runtime: puts a built spec to work in the kernel.
//!
//! It reads the build's IR (from the manifest; **it never parses `.devmap`
//! text**) and a loaded object, and writes the data part of the plan into the
//! object's maps. Loading, attaching, live updates and `status` build on
//! this.

pub mod apply;
pub mod bpffs;
pub mod deploy;
pub mod embed;
pub mod fill;
pub mod netdev;
pub mod pins;
pub mod plan;
pub mod status;
pub mod watch;

pub use deploy::{
    attach, detach, load, pin_dir_ready, probe, swap, Attachment, DeployError, Loaded, Support,
};
pub use fill::{fill, ArgsError, Device, FillError};
pub use netdev::{NetdevError, NotReady};
pub use plan::{desired, diff, execute, read_state, ApplyError, Handles, MapOp, Plan, PlanError, State};
