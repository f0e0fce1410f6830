//! `PROBEGATE_DEVICE` fails closed: an unknown device, or CUDA asked of a
//! build without it, is "could not evaluate" (exit 2) naming the variable,
//! never a silent run on the CPU.

use crate::harness::*;

/// `probegate activations` on one prompt, with `PROBEGATE_DEVICE=device`.
pub(crate) fn activations_on(device: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("p.jsonl");
    std::fs::write(&input, "{\"text\": \"Hello there\"}\n").expect("write prompts");
    bin()
        .current_dir(dir.path())
        .env("PROBEGATE_DEVICE", device)
        .args(["--format", "json", "activations", "--layers", "1"])
        .arg("--model")
        .arg(model_path("smollm2"))
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("a.safetensors"))
        .output()
        .expect("run")
}

/// The device a successful run's JSON summary says it ran on.
pub(crate) fn reported_device(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json summary");
    v["device"].as_str().unwrap_or_default().to_string()
}

#[test]
fn an_unknown_device_is_exit_2_naming_the_variable() {
    assert_exit_2_naming(&activations_on("gpu0"), &["PROBEGATE_DEVICE", "gpu0"]);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_asked_of_a_cpu_build_is_exit_2_saying_how_to_build_it() {
    assert_exit_2_naming(
        &activations_on("cuda"),
        &["built without CUDA", "--features cuda"],
    );
}

#[test]
fn cpu_is_the_default_and_is_said() {
    assert_eq!(reported_device(&activations_on("cpu")), "cpu");
}
