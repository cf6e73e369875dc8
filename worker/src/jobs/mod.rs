//! Pulling a function's jobs and running each attempt: pull (`pull`), read the job (`meta`),
//! check what its headers may not decide (`admit`), execute the function on its call threads (`attempt`, `executor`), decide what the outcome
//! means (`decide`, pure) and settle it (`settle`).
//!
//! Nothing here imports the crate root or the registry watch: the job path is handed its
//! state (`context::Jobs`) and never reaches up for more.

pub mod admit;
pub mod attempt;
pub mod context;
pub mod decide;
pub mod executor;
pub mod meta;
pub mod pull;
pub mod settle;
