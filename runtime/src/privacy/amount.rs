//! Amounts of privacy loss with their unit: ε on pure-DP datasets, ρ on zCDP datasets.
//!
//! A dataset's policy picks its measure; every charge, cap and cache key on it is in that
//! measure, so an amount travels with its measure rather than in one of two twin fields.
//!
//! ```
//! use sluice_runtime::Amount;
//! let a = Amount::zcdp(0.125);
//! assert_eq!(a.unit(), "ρ");
//! assert_eq!((a.epsilon(), a.rho()), (0.0, 0.125));
//! ```

use sluice_policy::PrivacyMeasure;

/// A quantity of privacy loss in a measure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Amount {
    /// The measure `value` is in.
    pub measure: PrivacyMeasure,
    /// ε (pure DP) or ρ (zCDP).
    pub value: f64,
}

impl Amount {
    /// ε of pure differential privacy.
    pub fn pure(value: f64) -> Self {
        Self {
            measure: PrivacyMeasure::Pure,
            value,
        }
    }

    /// ρ of zero-concentrated differential privacy.
    pub fn zcdp(value: f64) -> Self {
        Self {
            measure: PrivacyMeasure::Zcdp,
            value,
        }
    }

    /// `value` in `measure`.
    pub fn new(measure: PrivacyMeasure, value: f64) -> Self {
        Self { measure, value }
    }

    /// The measure's symbol, `ε` or `ρ`, for messages.
    pub fn unit(&self) -> &'static str {
        match self.measure {
            PrivacyMeasure::Pure => "ε",
            PrivacyMeasure::Zcdp => "ρ",
        }
    }

    /// The ε of this amount if it is one, else 0 (for wire formats with an ε and a ρ field).
    pub fn epsilon(&self) -> f64 {
        match self.measure {
            PrivacyMeasure::Pure => self.value,
            PrivacyMeasure::Zcdp => 0.0,
        }
    }

    /// The ρ of this amount if it is one, else 0 (for wire formats with an ε and a ρ field).
    pub fn rho(&self) -> f64 {
        match self.measure {
            PrivacyMeasure::Pure => 0.0,
            PrivacyMeasure::Zcdp => self.value,
        }
    }
}
