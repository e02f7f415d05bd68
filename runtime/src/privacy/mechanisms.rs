//! Noise mechanisms. All randomness that protects privacy comes from OpenDP's exact samplers.
//!
//! # Privacy
//! **What is released:** a vector of integers (one per output cell of one aggregate), each plus
//! independent discrete Laplace noise.
//!
//! **Precondition:** the L1 distance between the true vectors on two neighbouring datasets (one
//! privacy unit added or removed) is at most `sensitivity`. The engine guarantees it by bounding each
//! unit to `max_rows_per_unit` rows and clamping every summed value to the column's public bounds,
//! encoded as an integer (so there is no floating-point summation at all).
//!
//! **Mechanism:** `opendp::measurements::make_laplace` over
//! `VectorDomain<AtomDomain<i64>>` with `L1Distance<i64>` and `MaxDivergence` output: the discrete
//! Laplace (geometric) sampler of Canonne, Kamath and Steinke, fed by OpenSSL's CSPRNG (opendp's
//! `use-openssl` feature). It needs opendp's `contrib` feature, as does every OpenDP constructor in
//! 0.16; the mechanism itself is one of OpenDP's proven ones (see its `MakeNoise_for_DiscreteLaplace`
//! proof). No noise is ever drawn from `rand` or from floating-point inverse-CDF code, which defeats
//! Mironov's floating-point attack.
//!
//! **Privacy map:** ε = sensitivity / scale, computed by OpenDP's own map and checked against the
//! ε the engine intended to spend before any noise is drawn.
//!
//! # zero-concentrated DP (datasets with `privacy_measure = "zcdp"`)
//! **What is released:** the same integer vectors, each value plus independent *discrete
//! Gaussian* noise.
//!
//! **Precondition:** the L2 distance between the true vectors on neighbouring datasets is at most
//! the L2 sensitivity (see `Bounds::l2_rows` in the engine: a unit adds at most l∞ rows to each
//! of at most l0 cells and l1 in all).
//!
//! **Mechanism:** `opendp::measurements::make_gaussian` over `VectorDomain<AtomDomain<i64>>` with
//! `L2Distance<f64>` and `ZeroConcentratedDivergence` output: Canonne, Kamath and Steinke's exact
//! discrete Gaussian sampler (OpenDP's `MakeNoise_for_DiscreteGaussian` proof).
//!
//! **Privacy map:** ρ = Δ₂² / (2σ²), read from OpenDP's map and checked against the ρ intended.

use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::{make_gaussian, make_laplace};
use opendp::measures::{MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{L1Distance, L2Distance};

/// Confidence level of every stated accuracy: 95%.
pub const ALPHA: f64 = 0.05;

/// A discrete Laplace mechanism calibrated for one aggregate.
pub struct DiscreteLaplace {
    measurement: opendp::core::Measurement<
        VectorDomain<AtomDomain<i64>>,
        L1Distance<i64>,
        MaxDivergence,
        Vec<i64>,
    >,
    scale: f64,
}

/// Failure to build or run a mechanism (never data-dependent in message).
#[derive(Debug, thiserror::Error)]
#[error("noise mechanism failed: {0}")]
pub struct MechanismError(String);

impl MechanismError {
    pub(crate) fn new(msg: String) -> Self {
        Self(msg)
    }
}

fn opendp_error(e: opendp::error::Error) -> MechanismError {
    MechanismError(e.to_string())
}

/// Checks what OpenDP's privacy map says a mechanism `spent` against what was `intended` (in
/// `unit`, with float slack).
fn within(
    spent: Result<f64, opendp::error::Error>,
    intended: f64,
    unit: &str,
) -> Result<(), MechanismError> {
    let spent = spent.map_err(opendp_error)?;
    if spent > intended * (1.0 + 1e-9) {
        return Err(MechanismError(format!(
            "privacy map gives {unit}={spent}, above the intended {unit}={intended}"
        )));
    }
    Ok(())
}

impl DiscreteLaplace {
    /// Calibrates noise so that releasing a vector with L1 `sensitivity` costs at most `epsilon`.
    pub fn new(sensitivity: i64, epsilon: f64) -> Result<Self, MechanismError> {
        if sensitivity <= 0 || !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(MechanismError(format!(
                "invalid calibration: sensitivity {sensitivity}, ε {epsilon}"
            )));
        }
        let scale = sensitivity as f64 / epsilon;
        Self::with_scale(sensitivity, epsilon, scale)
    }

    /// Builds the mechanism with an explicit `scale`, checking that its privacy map at
    /// `sensitivity` stays within `epsilon` (plus float slack).
    pub(crate) fn with_scale(
        sensitivity: i64,
        epsilon: f64,
        scale: f64,
    ) -> Result<Self, MechanismError> {
        let measurement = make_laplace::<_, _, MaxDivergence>(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L1Distance::<i64>::default(),
            scale,
            None,
        )
        .map_err(opendp_error)?;
        within(measurement.map(&sensitivity), epsilon, "ε")?;
        Ok(Self { measurement, scale })
    }

    /// The noise scale (b of the Laplace distribution).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Adds independent noise to every value.
    pub fn release(&self, values: &[i64]) -> Result<Vec<i64>, MechanismError> {
        self.measurement
            .invoke(&values.to_vec())
            .map_err(sampling_failed)
    }

    /// Half-width of a (1 - `alpha`) interval for one released value, in the integer units released.
    pub fn accuracy(&self, alpha: f64) -> f64 {
        opendp::accuracy::discrete_laplacian_scale_to_accuracy(self.scale, alpha)
            .unwrap_or(f64::INFINITY)
    }
}

/// A discrete Gaussian mechanism calibrated for one aggregate (zero-concentrated DP).
pub struct DiscreteGaussian {
    measurement: opendp::core::Measurement<
        VectorDomain<AtomDomain<i64>>,
        L2Distance<f64>,
        ZeroConcentratedDivergence,
        Vec<i64>,
    >,
    scale: f64,
    /// The 95% half-width, computed once.
    accuracy: f64,
}

/// Above this σ, OpenDP's exact discrete Gaussian accuracy (which sums the pmf term by term, so
/// takes time linear in σ: minutes for the σ of a fine fixed-point sum) gives way to the
/// continuous bound.
const EXACT_ACCURACY_MAX_SCALE: f64 = 10_000.0;

/// The half-width of a (1 - `alpha`) interval of the discrete Gaussian with parameter `scale`.
/// For large scales: P(|X| ≥ m) ≤ P(|N| ≥ m - 1) for N the continuous Gaussian of the same σ
/// (Canonne, Kamath and Steinke 2020, Prop. 25), so the continuous half-width plus one holds.
fn discrete_gaussian_accuracy(scale: f64, alpha: f64) -> f64 {
    let exact = (scale <= EXACT_ACCURACY_MAX_SCALE)
        .then(|| opendp::accuracy::discrete_gaussian_scale_to_accuracy(scale, alpha).ok())
        .flatten();
    exact.unwrap_or_else(|| {
        opendp::accuracy::gaussian_scale_to_accuracy(scale, alpha)
            .map_or(f64::INFINITY, |a| a.ceil() + 1.0)
    })
}

impl DiscreteGaussian {
    /// Calibrates noise so that releasing a vector with L2 `sensitivity` costs at most `rho`
    /// (σ = Δ₂ / √(2ρ)), checked against OpenDP's privacy map.
    pub fn new(sensitivity: f64, rho: f64) -> Result<Self, MechanismError> {
        if !(sensitivity.is_finite() && sensitivity > 0.0 && rho.is_finite() && rho > 0.0) {
            return Err(MechanismError(format!(
                "invalid calibration: L2 sensitivity {sensitivity}, ρ {rho}"
            )));
        }
        let scale = sensitivity / (2.0 * rho).sqrt();
        let measurement = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L2Distance::<f64>::default(),
            scale,
            None,
        )
        .map_err(opendp_error)?;
        within(measurement.map(&sensitivity), rho, "ρ")?;
        Ok(Self {
            measurement,
            scale,
            accuracy: discrete_gaussian_accuracy(scale, ALPHA),
        })
    }
}

/// An additive integer mechanism of either family: what the engine adds to counts and sums.
pub enum Additive {
    /// Discrete Laplace, pure ε-DP.
    Laplace(DiscreteLaplace),
    /// Discrete Gaussian, ρ-zCDP.
    Gaussian(DiscreteGaussian),
}

impl Additive {
    /// The noise scale: b of the Laplace, σ of the Gaussian.
    pub fn scale(&self) -> f64 {
        match self {
            Self::Laplace(m) => m.scale,
            Self::Gaussian(m) => m.scale,
        }
    }

    /// The distribution's name, for mechanism descriptions.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Laplace(_) => "discrete Laplace",
            Self::Gaussian(_) => "discrete Gaussian",
        }
    }

    /// Adds independent noise to every value.
    pub fn release(&self, values: &[i64]) -> Result<Vec<i64>, MechanismError> {
        match self {
            Self::Laplace(m) => m.release(values),
            Self::Gaussian(m) => m
                .measurement
                .invoke(&values.to_vec())
                .map_err(sampling_failed),
        }
    }

    /// Half-width of a (1 - `alpha`) interval for one released value, in the integer units released.
    pub fn accuracy(&self, alpha: f64) -> f64 {
        match self {
            Self::Laplace(m) => m.accuracy(alpha),
            Self::Gaussian(m) if alpha == ALPHA => m.accuracy,
            Self::Gaussian(m) => discrete_gaussian_accuracy(m.scale, alpha),
        }
    }
}

/// A failed OpenDP sampler as a [`MechanismError`]. OpenDP's message may quote the values it was
/// given, which derive from private data, so only the error's kind is kept.
pub(crate) fn sampling_failed(e: opendp::error::Error) -> MechanismError {
    MechanismError(format!("sampling failed ({:?})", e.variant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opendp_privacy_map_matches_sensitivity_over_scale() {
        let m = DiscreteLaplace::new(5, 0.5).unwrap();
        assert!((m.scale() - 10.0).abs() < 1e-12);
    }

    #[test]
    fn refuses_a_scale_too_small_for_the_epsilon() {
        assert!(DiscreteLaplace::with_scale(5, 0.5, 5.0).is_err());
    }

    #[test]
    fn gaussian_scale_is_l2_over_root_two_rho_and_its_accuracy_about_two_sigmas() {
        let m = Additive::Gaussian(DiscreteGaussian::new(3.0, 0.5).unwrap());
        assert!((m.scale() - 3.0).abs() < 1e-12);
        // OpenDP's discrete bound: an integer, at least the continuous 1.96σ.
        let a = m.accuracy(ALPHA);
        assert!((1.96 * 3.0..=2.5 * 3.0).contains(&a), "{a}");
    }

    #[test]
    fn large_gaussian_scales_get_the_continuous_bound_plus_one_quickly() {
        // Where both apply, the bound is at least OpenDP's exact value and at most 2 above it.
        for scale in [50.0, 700.0, 9_000.0] {
            let exact =
                opendp::accuracy::discrete_gaussian_scale_to_accuracy(scale, ALPHA).unwrap();
            let bound = opendp::accuracy::gaussian_scale_to_accuracy(scale, ALPHA)
                .unwrap()
                .ceil()
                + 1.0;
            assert!(
                bound >= exact && bound <= exact + 2.0,
                "{scale}: {bound} vs {exact}"
            );
        }
        // A fixed-point sum's σ: answered at once.
        let t = std::time::Instant::now();
        let a = discrete_gaussian_accuracy(1.85e10, ALPHA);
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
        assert!((a / 1.85e10 - 1.96).abs() < 0.01, "{a}");
    }

    #[test]
    fn accuracy_at_95_percent_is_about_three_scales() {
        let m = DiscreteLaplace::new(1, 1.0).unwrap();
        let a = m.accuracy(ALPHA);
        assert!(a > 2.0 && a < 4.5, "{a}");
    }
}
