//! "Where the layers ran": the layers llama.cpp placed on the CPU and on each GPU or RPC server at every load of
//! the offload curve (rows that record their devices, velollm's `effective.devices`).

use velollm_results::Run;

use super::{short_name, Dims, Item};

#[derive(Debug, Clone, PartialEq)]
pub struct Placements {
    /// One group per load of the curve: `ngl 10`, with the devices and tensor split when those vary.
    pub groups: Vec<String>,
    /// Every device that held layers, in the order first seen (a colour each).
    pub devices: Vec<String>,
    pub bars: Vec<PlacedLayers>,
}

/// The layers one device held in one group.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedLayers {
    pub group: usize,
    /// Index into [`Placements::devices`].
    pub device: usize,
    pub layers: f64,
    /// Where the device is (an RPC server's endpoint), when llama.cpp said.
    pub location: Option<String>,
    /// The model weights it holds, when recorded.
    pub weight_megabytes: Option<f64>,
}

/// The placements, or none when the offload does not vary, when no row placed layers off the CPU, or when fewer
/// than two loads did (nothing to compare). A row's first load of a group stands for the group; a device whose
/// layers the row does not record is left out rather than drawn at zero.
pub fn placements(items: &[Item], runs: &[Run]) -> Option<Placements> {
    let varying = Dims::of(&items.iter().collect::<Vec<_>>(), runs, None).parameters;
    if !varying.iter().any(|p| p == "n_gpu_layers" || p == "devices" || p == "tensor_split") {
        return None;
    }
    let mut view = Placements { groups: Vec::new(), devices: Vec::new(), bars: Vec::new() };
    for item in items {
        let Some(placed) = item.entry.source["parameters"]["effective"]["devices"].as_array() else { continue };
        if !placed.iter().any(|d| d["backend"].as_str().is_some_and(|b| b != "CPU")) {
            continue;
        }
        // What the row records of the offload, the devices and the split (when those vary).
        let parameters = &item.entry.parameters;
        let label = ["n_gpu_layers", "devices", "tensor_split"]
            .iter()
            .filter(|p| **p == "n_gpu_layers" || varying.iter().any(|v| v == *p))
            .filter_map(|p| {
                let value = parameters.get(*p)?;
                Some(if *p == "n_gpu_layers" { format!("{} {value}", short_name(p)) } else { value.clone() })
            })
            .collect::<Vec<_>>()
            .join(" · ");
        if view.groups.contains(&label) {
            continue;
        }
        view.groups.push(label);
        for device in placed {
            let name = device["name"].as_str().unwrap_or("?").to_string();
            let Some(layers) = device["layers"].as_f64() else { continue };
            let device_index = view.devices.iter().position(|d| *d == name).unwrap_or_else(|| {
                view.devices.push(name);
                view.devices.len() - 1
            });
            view.bars.push(PlacedLayers {
                group: view.groups.len() - 1,
                device: device_index,
                layers,
                location: device["description"].as_str().filter(|d| !d.is_empty()).map(str::to_string),
                weight_megabytes: device["model_buffer_bytes"].as_f64().map(|b| b / 1e6),
            });
        }
    }
    (view.groups.len() >= 2).then_some(view)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::view::items;
    use serde_json::{json, Value};
    use velollm_fixtures::{token_samples_at, Row};
    use velollm_results::read_str;

    /// Rows of an offload sweep over CPU, RPC0 and RPC1: (layers offloaded, layers per device) each.
    pub(crate) fn offload_rows(splits: &[(u32, [u64; 3])]) -> Vec<Value> {
        splits
            .iter()
            .map(|&(ngl, split)| {
                let mut row = Row::tokens(0, 16, 0, token_samples_at(0, 16, &[40.0, 41.0]))
                    .gpu_layers(velollm_core::GpuLayers::Count(ngl))
                    .to_json();
                let devices: Vec<Value> = ["CPU", "RPC0", "RPC1"]
                    .iter()
                    .zip(split)
                    .map(|(name, layers)| {
                        json!({"name": name, "backend": if *name == "CPU" { "CPU" } else { "RPC" },
                               "description": if *name == "RPC0" { "127.0.0.1:5001" } else { "" },
                               "layers": layers, "model_buffer_bytes": layers * 3_000_000})
                    })
                    .collect();
                row["parameters"]["effective"]["devices"] = Value::Array(devices);
                row
            })
            .collect()
    }

    #[test]
    fn the_placements_hold_a_bar_per_device_and_load() {
        let rows = offload_rows(&[(0, [31, 0, 0]), (10, [21, 5, 5]), (20, [11, 10, 10])]);
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        let view = placements(&items(&runs), &runs).expect("the offload varies");
        assert_eq!(view.groups, ["ngl 0", "ngl 10", "ngl 20"]);
        assert_eq!(view.devices, ["CPU", "RPC0", "RPC1"]);
        let bars: Vec<(usize, usize, f64)> = view.bars.iter().map(|b| (b.group, b.device, b.layers)).collect();
        assert_eq!(bars[3..6], [(1, 0, 21.0), (1, 1, 5.0), (1, 2, 5.0)]);
        assert_eq!(bars.len(), 9);
        assert_eq!(view.bars[4].location.as_deref(), Some("127.0.0.1:5001"));
        assert_eq!(view.bars[5].location, None);
        assert_eq!(view.bars[4].weight_megabytes, Some(15.0));
    }

    #[test]
    fn no_placements_without_two_offloaded_loads() {
        // A CPU-only sweep: no device but the CPU at either load.
        let mut rows = offload_rows(&[(0, [31, 0, 0]), (10, [21, 5, 5])]);
        for row in &mut rows {
            row["parameters"]["effective"]["devices"] = json!([{"name": "CPU", "backend": "CPU", "layers": 31}]);
        }
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        assert_eq!(placements(&items(&runs), &runs), None, "no layers off the CPU");
        let rows = offload_rows(&[(10, [21, 5, 5])]);
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        assert_eq!(placements(&items(&runs), &runs), None, "the offload does not vary");
    }
}
