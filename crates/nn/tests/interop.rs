//! Checkpoints interoperate with Python's `safetensors` + numpy: a file selfsup writes is read
//! there with the same values, and a file Python writes loads here. Skips (with a message)
//! when `python3` with `safetensors` and `numpy` is not installed; CI installs them.

use std::process::Command;

use selfsup_nn::checkpoint::{load_model, save_model};
use selfsup_nn::{Linear, Module};
use selfsup_tensor::{DType, Generator};

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import safetensors.numpy, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn checkpoints_round_trip_through_python_safetensors() {
    if !python_ready() {
        eprintln!(
            "skipped: python3 with safetensors and numpy not found (pip install safetensors numpy)"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("selfsup-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ours = dir.join("ours.safetensors");
    let theirs = dir.join("theirs.safetensors");
    let layer = Linear::new(3, 2, true, DType::F32, &mut Generator::new(4)).unwrap();
    save_model(&ours, &layer).unwrap();

    // Python reads our file, prints the values, and writes weight * 2 and bias + 1.
    let script = r#"
import sys, json
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])
print(json.dumps({k: v.astype('float64').ravel().tolist() for k, v in t.items()}))
save_file({"weight": t["weight"] * 2, "bias": t["bias"] + 1}, sys.argv[2])
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&ours)
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let w: Vec<f32> = layer.weight.to_vec().unwrap();
    let b: Vec<f32> = layer.bias.as_ref().unwrap().to_vec().unwrap();
    for (name, vals) in [("weight", &w), ("bias", &b)] {
        let key = format!("\"{name}\": [");
        let start = text
            .find(&key)
            .unwrap_or_else(|| panic!("{name} missing in {text}"))
            + key.len();
        let end = start + text[start..].find(']').unwrap();
        let got: Vec<f64> = text[start..end]
            .split(',')
            .map(|s| s.trim().parse().unwrap())
            .collect();
        assert_eq!(
            got,
            vals.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            "{name} differs as read by Python"
        );
    }

    let other = Linear::new(3, 2, true, DType::F32, &mut Generator::new(99)).unwrap();
    load_model(&theirs, &other, None).unwrap();
    assert_eq!(
        other.weight.to_vec::<f32>().unwrap(),
        w.iter().map(|v| v * 2.0).collect::<Vec<_>>()
    );
    assert_eq!(
        other.bias.as_ref().unwrap().to_vec::<f32>().unwrap(),
        b.iter().map(|v| v + 1.0).collect::<Vec<_>>()
    );
    assert_eq!(other.num_params(), 8);
    std::fs::remove_dir_all(&dir).ok();
}
