#![no_main]
// The body is kassa::fuzzing::cookie; `tests/it/fuzz_corpora.rs` replays this target's seeds.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kassa::fuzzing::cookie(data));
