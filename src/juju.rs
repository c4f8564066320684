//! The hook tools, shared with the easyrsa charm (charmkit::juju).

pub use charmkit::juju::*;
pub use charmkit::secrets::*;
