//! `trainer_state.json` on arbitrary bytes through `TrainerState::read`: an error naming the
//! file or a state, never a panic; a state that reads writes a file that reads back equal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_train::TrainerState;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("trainer-state-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join("trainer_state.json");
    std::fs::write(&path, data).expect("the input is written");
    let Ok(state) = TrainerState::read(&path) else {
        return;
    };
    state.write(&path).expect("a state that reads writes");
    let again = TrainerState::read(&path).expect("a written state reads");
    // NaN losses are not equal to themselves: compare the JSON.
    assert_eq!(
        serde_json::to_string(&again).ok(),
        serde_json::to_string(&state).ok()
    );
});
