//! Research tooling that runs the gate, not part of it: fine-tuning on CPU
//! ([`finetune`]), the zoo of real update conditions ([`zoo`]) and the
//! staleness study reproduced from the zoo's grid ([`study`]).

pub mod finetune;
pub mod zoo;
pub mod study;
