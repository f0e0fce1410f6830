//! The repair ladder.

pub mod realign;
