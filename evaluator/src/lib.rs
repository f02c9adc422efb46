//! The Nix language evaluator: rnix parse → IR with statically resolved variables → lazy evaluation.

pub mod api;
