#![no_main]
// The body is kassa::fuzzing::portone_answer; `tests/it/fuzz_corpora.rs` replays this target's seeds.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kassa::fuzzing::portone_answer(data));
