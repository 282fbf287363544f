//! Composite alarms: boolean expressions over named alarms. The built-in
//! templates (zone, region, instance and link impaired) are expressions like
//! any other, so an operator can read — and write — exactly what fires.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// The current value of a named alarm; an unknown name is false.
    Alarm(String),
    All(Vec<Expr>),
    Any(Vec<Expr>),
    Not(Box<Expr>),
    /// At least `k` of the expressions hold.
    AtLeast(usize, Vec<Expr>),
}

impl Expr {
    pub fn alarm(name: impl Into<String>) -> Expr {
        Expr::Alarm(name.into())
    }

    pub fn negate(e: Expr) -> Expr {
        Expr::Not(Box::new(e))
    }

    pub fn eval(&self, alarms: &BTreeMap<String, bool>) -> bool {
        match self {
            Expr::Alarm(n) => alarms.get(n).copied().unwrap_or(false),
            Expr::All(v) => v.iter().all(|e| e.eval(alarms)),
            Expr::Any(v) => v.iter().any(|e| e.eval(alarms)),
            Expr::Not(e) => !e.eval(alarms),
            Expr::AtLeast(k, v) => v.iter().filter(|e| e.eval(alarms)).count() >= *k,
        }
    }

    /// Every alarm name the expression reads.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Expr::Alarm(n) => vec![n.as_str()],
            Expr::All(v) | Expr::Any(v) | Expr::AtLeast(_, v) => {
                v.iter().flat_map(|e| e.names()).collect()
            }
            Expr::Not(e) => e.names(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_combine_alarms() {
        let alarms: BTreeMap<String, bool> = [("a", true), ("b", false), ("c", true)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let a = || Expr::alarm("a");
        let b = || Expr::alarm("b");
        let c = || Expr::alarm("c");
        assert!(Expr::All(vec![a(), c()]).eval(&alarms));
        assert!(!Expr::All(vec![a(), b()]).eval(&alarms));
        assert!(Expr::Any(vec![b(), c()]).eval(&alarms));
        assert!(Expr::negate(b()).eval(&alarms));
        assert!(Expr::AtLeast(2, vec![a(), b(), c()]).eval(&alarms));
        assert!(!Expr::AtLeast(3, vec![a(), b(), c()]).eval(&alarms));
        assert!(!Expr::alarm("unknown").eval(&alarms));
        let e: Expr =
            serde_json::from_str(r#"{"all": [{"alarm": "a"}, {"not": {"alarm": "b"}}]}"#).unwrap();
        assert!(e.eval(&alarms));
        assert_eq!(e.names(), vec!["a", "b"]);
    }
}
