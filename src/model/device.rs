//! Where the forward pass runs: `PROBEGATE_DEVICE` = `cpu` (the default, the
//! reference path CI runs) or `cuda` / `cuda:N` in a build with the `cuda`
//! feature. Weights are read and checked on the CPU as always, then moved;
//! pooled activations come back to the CPU, so everything after the forward
//! pass (cache, monitors, gate) is the same code on either device.

use std::sync::Mutex;

use candle_core::Device;

use crate::error::{Error, Result};

/// The variable that picks the device for every command that runs a model.
pub const DEVICE_ENV: &str = "PROBEGATE_DEVICE";

/// The device a name asks for, without opening it: `None` for the CPU, else
/// the CUDA ordinal. An unknown name is an error naming the variable.
pub fn cuda_ordinal(name: &str) -> Result<Option<usize>> {
    let bad = || {
        Error::Usage(format!(
            "{DEVICE_ENV}={name:?} is not one of cpu, cuda, cuda:N"
        ))
    };
    match name.trim() {
        "" | "cpu" => Ok(None),
        "cuda" => Ok(Some(0)),
        s => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(Some)
            .ok_or_else(bad),
    }
}

/// The CUDA ordinal `PROBEGATE_DEVICE` asks for (`None`: the CPU).
pub fn cuda_ordinal_from_env() -> Result<Option<usize>> {
    cuda_ordinal(&std::env::var(DEVICE_ENV).unwrap_or_default())
}

/// Opens the device `PROBEGATE_DEVICE` names. A CUDA device is opened once
/// per process and shared: tensors of two candle devices cannot meet, and a
/// context costs hundreds of milliseconds to create.
pub fn device_from_env() -> Result<Device> {
    open_device(cuda_ordinal_from_env()?)
}

/// Opens the CPU (`None`) or a CUDA device by ordinal.
pub fn open_device(ordinal: Option<usize>) -> Result<Device> {
    let Some(ordinal) = ordinal else {
        return Ok(Device::Cpu);
    };
    if !cfg!(feature = "cuda") {
        return Err(Error::Usage(format!(
            "{DEVICE_ENV}=cuda:{ordinal}: this probegate was built without CUDA; \
             build it with `--features cuda` where the CUDA toolkit is installed (docs/gpu.md)"
        )));
    }
    static OPEN: Mutex<Vec<(usize, Device)>> = Mutex::new(Vec::new());
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, d)) = open.iter().find(|(o, _)| *o == ordinal) {
        return Ok(d.clone());
    }
    let d = Device::new_cuda(ordinal).map_err(|e| {
        Error::Usage(format!(
            "{DEVICE_ENV}=cuda:{ordinal}: could not open the CUDA device: {e}"
        ))
    })?;
    open.push((ordinal, d.clone()));
    Ok(d)
}

/// A device as `PROBEGATE_DEVICE` names it: `cpu`, `cuda:N`.
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// What the activation cache adds to its key for activations computed off
/// the CPU: `None` on the CPU, so CPU entries keep their keys. GPU and CPU
/// results agree to float rounding, not bit for bit, and a base's cached
/// activations should differ from its candidate's only by what the
/// candidate changed.
pub fn cache_tag_from_env() -> Result<Option<String>> {
    Ok(cuda_ordinal_from_env()?.map(|_| "cuda".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_bad_ones_name_the_variable() {
        assert_eq!(cuda_ordinal("cpu").unwrap(), None);
        assert_eq!(cuda_ordinal("").unwrap(), None);
        assert_eq!(cuda_ordinal("cuda").unwrap(), Some(0));
        assert_eq!(cuda_ordinal(" cuda:3 ").unwrap(), Some(3));
        for bad in ["gpu", "cuda:", "cuda:x", "metal"] {
            let e = cuda_ordinal(bad).unwrap_err().to_string();
            assert!(e.contains(DEVICE_ENV) && e.contains(bad), "{e}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn asking_a_cpu_build_for_cuda_says_how_to_get_it() {
        let e = open_device(Some(0)).unwrap_err().to_string();
        assert!(
            e.contains("built without CUDA") && e.contains("--features cuda"),
            "{e}"
        );
    }
}
