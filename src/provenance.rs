//! Provenance: what made an artifact, so that a figure can be cited and recomputed. The model
//! (its name and the SHA-256 of its file), the crate version, the backend, the attached dataset,
//! and one record per technique with its settings (seed and steps among them). Every widget
//! carries one in its props as `provenance`; pages and saved PNGs embed it as JSON.
//!
//! A technique's parameters are its settings struct serialized, so a new setting is recorded
//! without naming it here. The same provenance on the same backend gives the same pixels.

use serde::Serialize;

use crate::model::Model;

/// What made an artifact. Strings in it (the model's path, a dataset's name) may come from
/// untrusted files: they travel as JSON and are shown as text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Provenance {
    /// The microscope crate's version.
    pub crate_version: String,
    /// `cpu` or `cuda` ([`crate::Device::kind`]).
    pub backend: String,
    /// `zoo:NAME` or the model file's path; `None` for images made from a bare tensor.
    pub model: Option<String>,
    /// The SHA-256 of the model file (hex).
    pub model_sha256: Option<String>,
    /// What loading left out of the model file, when only its supported part was loaded
    /// ([`Model::load_partial`]): one line, e.g. `stops before NonZero (node rpn.nonzero): …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_left_out: Option<String>,
    /// The attached dataset (name and size), when there is one.
    pub dataset: Option<String>,
    /// Every technique that went into the artifact, in order.
    pub techniques: Vec<Technique>,
}

/// One technique applied: its name, what it was applied to, and its settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Technique {
    /// `feature-vis`, `unit-view`, ...
    pub name: String,
    /// What it looked at: `conv3`, `conv3:7`, `conv3:[0, 1, 2]`.
    pub target: String,
    /// Its settings, as the technique's settings struct serializes.
    pub params: serde_json::Value,
}

impl Provenance {
    /// The provenance of something computed from `model` (and its attached dataset), before
    /// any technique.
    pub fn of(model: &Model) -> Provenance {
        Provenance {
            model: Some(model.source()),
            model_sha256: Some(model.digest().to_string()),
            model_left_out: model.left_out().map(|l| l.to_string()),
            dataset: model
                .dataset()
                .map(|d| format!("{} ({} inputs)", d.name(), d.len())),
            ..Provenance::without_model(model.network().device().kind())
        }
    }

    /// The provenance of images that came from no model (a tensor a user made), on `backend`.
    pub fn without_model(backend: &str) -> Provenance {
        Provenance {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            backend: backend.to_string(),
            model: None,
            model_sha256: None,
            model_left_out: None,
            dataset: None,
            techniques: Vec::new(),
        }
    }

    /// This provenance with technique `name` applied to `target` with `params` (a settings
    /// struct) added.
    pub fn technique(mut self, name: &str, target: &str, params: &impl Serialize) -> Provenance {
        self.techniques.push(Technique {
            name: name.to_string(),
            target: target.to_string(),
            params: plain_json(params),
        });
        self
    }

    /// The first `key` among the techniques' parameters, depth first (`seed`, `steps`).
    pub fn param(&self, key: &str) -> Option<&serde_json::Value> {
        fn find<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
            match v {
                serde_json::Value::Object(m) => {
                    m.get(key).or_else(|| m.values().find_map(|x| find(x, key)))
                }
                serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, key)),
                _ => None,
            }
        }
        self.techniques.iter().find_map(|t| find(&t.params, key))
    }

    /// One line for text outputs: version, backend, model and its digest, techniques, seed and
    /// steps.
    pub fn line(&self) -> String {
        let mut parts = vec![
            format!("microscope {}", self.crate_version),
            self.backend.clone(),
        ];
        match (&self.model, &self.model_sha256) {
            (Some(m), Some(d)) => parts.push(format!("{m} (sha256 {d})")),
            (Some(m), None) => parts.push(m.clone()),
            _ => parts.push("no model recorded".into()),
        }
        if self.model_left_out.is_some() {
            parts.push("loaded in part".into());
        }
        if let Some(d) = &self.dataset {
            parts.push(d.clone());
        }
        for t in &self.techniques {
            parts.push(format!("{} of {}", t.name, t.target));
        }
        for key in ["seed", "steps"] {
            if let Some(v) = self.param(key) {
                parts.push(format!("{key} {v}"));
            }
        }
        format!("provenance: {}\n", parts.join(" · "))
    }
}

/// `value` as JSON, with each `f32` as it prints (`0.05`, not the `f64` `0.05000000074505806`
/// that `serde_json::to_value` gives): written as text, then read back.
fn plain_json(value: &impl Serialize) -> serde_json::Value {
    let text = serde_json::to_string(value).expect("technique settings are plain data");
    serde_json::from_str(&text).expect("serde_json reads what it writes")
}

/// An optional image setting (an attribution's or a caricature's image, a baseline) as it goes
/// into a provenance: its shape (the pixels are the user's data, not a parameter).
pub(crate) fn image_shape<S: serde::Serializer>(
    image: &Option<crate::network::DynTensor>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::Serialize;
    image
        .as_ref()
        .map(crate::network::DynTensor::dims)
        .serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Settings {
        inner: Inner,
        steps: usize,
        rate: f32,
    }

    #[derive(Serialize)]
    struct Inner {
        seed: u64,
    }

    #[test]
    fn parameters_are_found_at_any_depth_and_shown_in_the_line() {
        let p = Provenance::without_model("cpu").technique(
            "feature-vis",
            "conv3:7",
            &Settings {
                inner: Inner { seed: 9 },
                steps: 48,
                rate: 0.05,
            },
        );
        assert_eq!(p.param("seed"), Some(&serde_json::json!(9)));
        assert_eq!(p.param("rate"), Some(&serde_json::json!(0.05)));
        let line = p.line();
        for part in [
            "microscope ",
            "cpu",
            "feature-vis of conv3:7",
            "seed 9",
            "steps 48",
        ] {
            assert!(line.contains(part), "{line}");
        }
    }
}
