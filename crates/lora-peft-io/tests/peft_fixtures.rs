//! Adapter directories written by the real PEFT, read into a Burn model, and written back.
//!
//! Fixtures: `scripts/gen_peft_io_fixtures.py` (see `tests/fixtures/README.md`). The model is a
//! T5-shaped tree of linear layers, the same as the script's `Tiny`. Outputs must match PEFT's
//! within 1e-5 of the largest magnitude (f32; half-precision fixtures were computed by PEFT
//! with the rounded weights, so the same bound holds).

mod common;

use std::path::PathBuf;

use burn::tensor::Tensor;
use common::{base_model, copy_dir, fixtures, scratch_dir, tensor, write_tensors, Cpu};
use lora_core::{lora_layer_paths, LoraModule};
use lora_peft_io::{
    load_adapter, save_adapter, AdapterConfig, HostTensor, PeftIoError, SaveOptions, WeightDtype,
};

const TOLERANCE: f64 = 1e-5;

fn input() -> (Tensor<Cpu, 3>, Tensor<Cpu, 3>) {
    let t = lora_hf::read_safetensors(&fixtures().join("input.safetensors")).unwrap();
    (tensor(&t["x"]), tensor(&t["y_base"]))
}

fn values<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

#[track_caller]
fn assert_close(got: Tensor<Cpu, 3>, expected: &HostTensor, what: &str) {
    let (got, expected) = (
        values(got),
        expected
            .values
            .iter()
            .map(|v| *v as f64)
            .collect::<Vec<_>>(),
    );
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= TOLERANCE * scale,
        "{what}: max abs error {worst:e} > {TOLERANCE:e} × {scale}"
    );
}

struct Case {
    name: &'static str,
    adapter: &'static str,
}

const CASES: [Case; 13] = [
    Case {
        name: "list_qv",
        adapter: "default",
    },
    Case {
        name: "regex",
        adapter: "default",
    },
    Case {
        name: "patterns",
        adapter: "default",
    },
    Case {
        name: "rslora_bf16",
        adapter: "default",
    },
    Case {
        name: "fp16",
        adapter: "default",
    },
    Case {
        name: "named",
        adapter: "style",
    },
    Case {
        name: "dora",
        adapter: "default",
    },
    Case {
        name: "layers",
        adapter: "default",
    },
    Case {
        name: "exclude",
        adapter: "default",
    },
    Case {
        name: "lm_head_all_linear",
        adapter: "default",
    },
    Case {
        name: "minimal",
        adapter: "default",
    },
    Case {
        name: "old_peft",
        adapter: "default",
    },
    Case {
        name: "unknown_keys",
        adapter: "default",
    },
];

fn targets(case: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(case).join("targets.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Two tests per fixture, so a failing case hides no other (`cargo test --test peft_fixtures
/// dora::` runs one fixture's): it loads, targets the modules PEFT targeted and gives PEFT's
/// output; and it saves back as PEFT wrote it.
macro_rules! per_case {
    ($($case:ident => $adapter:literal),* $(,)?) => {$(
        mod $case {
            const CASE: super::Case = super::Case { name: stringify!($case), adapter: $adapter };

            #[test]
            fn loads_targets_the_same_modules_and_gives_peft_output() {
                super::loads_and_matches_peft(&CASE);
            }

            #[test]
            fn saves_back_as_peft_wrote_it() {
                super::saves_as_peft_did(&CASE);
            }
        }
    )*};
}

per_case!(
    list_qv => "default",
    regex => "default",
    patterns => "default",
    rslora_bf16 => "default",
    fp16 => "default",
    named => "style",
    dora => "default",
    layers => "default",
    exclude => "default",
    lm_head_all_linear => "default",
    minimal => "default",
    old_peft => "default",
    unknown_keys => "default",
);

#[test]
fn the_base_model_gives_peft_base_output() {
    let (x, y_base) = input();
    assert!(values(base_model().forward(x))
        .iter()
        .zip(values(y_base))
        .all(|(a, b)| (a - b).abs() < 1e-5));
}

fn loads_and_matches_peft(case: &Case) {
    let (x, _) = input();
    let mut model = base_model();
    let config = load_adapter(&mut model, &fixtures().join(case.name), case.adapter)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let expected = targets(case.name);
    let mut loaded = Vec::new();
    model.visit_lora("", &mut |path, layer| {
        if let Some(adapter) = layer.adapter(case.adapter) {
            loaded.push(path.to_string());
            assert_eq!(
                adapter.rank() as u64,
                expected["r"][path].as_u64().unwrap(),
                "{path}"
            );
            let scaling = expected["scaling"][path].as_f64().unwrap();
            assert!(
                (adapter.scaling() - scaling).abs() < 1e-12,
                "{} {path}",
                case.name
            );
            assert_eq!(adapter.is_dora(), config.use_dora());
        }
    });
    let wanted: Vec<String> = expected["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    loaded.sort();
    assert_eq!(loaded, wanted, "{}: targeted modules", case.name);
    let y = lora_hf::read_safetensors(&fixtures().join(case.name).join("expected.safetensors"))
        .unwrap();
    assert_close(model.forward(x.clone()), &y["y"], case.name);
}

/// The element type a case's fixture was saved in.
fn saved_dtype(case: &str) -> WeightDtype {
    match case {
        "rslora_bf16" => WeightDtype::BF16,
        "fp16" => WeightDtype::F16,
        _ => WeightDtype::F32,
    }
}

fn saves_as_peft_did(case: &Case) {
    if case.name == "old_peft" {
        return legacy_pickle_saves_as_list_qv_tensors();
    }
    let scratch = scratch_dir(&format!("round_trip_{}", case.name));
    let source = lora_peft_io::adapter_dir(&fixtures().join(case.name), case.adapter);
    let out = scratch.join(case.name);
    let written = load_and_save(case, &out);
    assert_eq!(written, lora_peft_io::adapter_dir(&out, case.adapter));
    let original_config = std::fs::read_to_string(source.join("adapter_config.json")).unwrap();
    let saved_config = std::fs::read_to_string(written.join("adapter_config.json")).unwrap();
    if case.name == "minimal" {
        // Hand-written, not in PEFT's layout: the same keys and values, in PEFT's layout.
        let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
        assert_eq!(parse(&saved_config), parse(&original_config));
    } else {
        assert_eq!(saved_config, original_config, "{}: config text", case.name);
    }
    let original = std::fs::read(source.join("adapter_model.safetensors")).unwrap();
    let saved = std::fs::read(written.join("adapter_model.safetensors")).unwrap();
    assert_eq!(
        lora_hf::parse_safetensors(&saved, "saved".as_ref()).unwrap(),
        lora_hf::parse_safetensors(&original, "original".as_ref()).unwrap(),
        "{}: tensors",
        case.name
    );
    assert_eq!(saved, original, "{}: bytes", case.name);
    std::fs::remove_dir_all(scratch).unwrap();
}

/// Loads fixture `case` into the base model and saves it to `out` in the fixture's dtype;
/// returns the adapter's directory there.
fn load_and_save(case: &Case, out: &std::path::Path) -> PathBuf {
    let mut model = base_model();
    let source = lora_peft_io::adapter_dir(&fixtures().join(case.name), case.adapter);
    let config = load_adapter(&mut model, &source, case.adapter).unwrap();
    let options = SaveOptions {
        dtype: saved_dtype(case.name),
        ..SaveOptions::default()
    };
    save_adapter(&model, out, case.adapter, &config, options).unwrap()
}

#[test]
fn unknown_config_keys_are_kept() {
    let config = AdapterConfig::read(&fixtures().join("unknown_keys/adapter_config.json")).unwrap();
    assert_eq!(
        config.get("zeta_flag"),
        Some(&serde_json::Value::Bool(true))
    );
    assert!(config.to_json_string().contains("\"future_option\""));
}

/// Writes every fixture case back out with this crate, for
/// `scripts/gen_peft_io_fixtures.py --check-rust-output DIR` to load with PEFT.
/// Run with `LORA_PEFT_EXPORT_DIR=DIR cargo test -p lora-peft-io -- --ignored`.
#[test]
#[ignore = "writes files for the Python-side check"]
fn export_adapters_for_the_peft_check() {
    let root = PathBuf::from(std::env::var("LORA_PEFT_EXPORT_DIR").expect("LORA_PEFT_EXPORT_DIR"));
    for case in CASES {
        let out = root.join(case.name);
        load_and_save(&case, &out);
        let meta = serde_json::json!({"case": case.name, "adapter_name": case.adapter});
        std::fs::write(out.join("case.json"), meta.to_string()).unwrap();
    }
}

#[test]
fn a_failed_load_leaves_the_model_unchanged() {
    let scratch = scratch_dir("unchanged");
    let dir = scratch.join("broken");
    copy_dir(&fixtures().join("list_qv"), &dir);
    // Drop one lora_B: the last layer in visiting order has no B.
    let mut tensors = lora_hf::read_safetensors(&dir.join("adapter_model.safetensors")).unwrap();
    let missing = "base_model.model.decoder.block.1.layer.0.SelfAttention.v.lora_B.weight";
    tensors.remove(missing).unwrap();
    write_tensors(&dir, &tensors);
    let mut model = base_model();
    let err = load_adapter(&mut model, &dir, "default").unwrap_err();
    assert!(
        matches!(&err, PeftIoError::MissingTensor { key, .. } if key == missing),
        "{err}"
    );
    let mut untouched = true;
    model.visit_lora("", &mut |_, layer| untouched &= layer.adapters.is_empty());
    assert!(untouched, "no layer may keep a partial adapter");
    std::fs::remove_dir_all(scratch).unwrap();
}

#[test]
fn the_model_paths_are_the_hugging_face_paths() {
    let paths = lora_layer_paths(&base_model(), "");
    assert_eq!(paths.len(), 25);
    assert_eq!(paths[0], "encoder.block.0.layer.0.SelfAttention.q");
    assert_eq!(paths[5], "encoder.block.0.layer.1.DenseReluDense.wo");
    assert_eq!(paths[24], "lm_head");
}

/// A `.bin` source is rewritten as safetensors: the legacy pickle holds the same tensors as
/// `list_qv`'s safetensors file, and so does what is saved from it.
fn legacy_pickle_saves_as_list_qv_tensors() {
    let scratch = scratch_dir("round_trip_old_peft");
    let mut model = base_model();
    let config = load_adapter(&mut model, &fixtures().join("old_peft"), "default").unwrap();
    assert_eq!(
        config.get("merge_weights"),
        Some(&serde_json::Value::Bool(false))
    );
    let out = save_adapter(
        &model,
        &scratch.join("old_peft"),
        "default",
        &config,
        SaveOptions::default(),
    )
    .unwrap();
    assert_eq!(
        lora_hf::read_safetensors(&out.join("adapter_model.safetensors")).unwrap(),
        lora_hf::read_safetensors(&fixtures().join("list_qv/adapter_model.safetensors")).unwrap()
    );
    std::fs::remove_dir_all(scratch).unwrap();
}
