//! One integration-test binary (as ripgrep does): shared harness, one module per area.

mod harness;
mod reference;
