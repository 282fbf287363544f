use std::fmt;

/// One problem found while validating, named by the path of the offending field
/// (for example `service.catalog.min_healthy`), so an operator can find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem of one document, reported at once rather than one per attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.0.iter()
    }

    pub fn into_result<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Why a config or controls document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not well-formed, has a wrong type or an unknown field. The
    /// message carries the line and column from the parser.
    #[error("{0}")]
    Parse(String),
    /// The document parsed but breaks one or more rules.
    #[error("{0}")]
    Invalid(ValidationErrors),
}

impl ConfigError {
    /// Each problem as `path: message`, one per entry, for JSON error bodies.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            ConfigError::Parse(m) => vec![m.trim().to_string()],
            ConfigError::Invalid(errs) => errs.iter().map(|e| e.to_string()).collect(),
        }
    }
}

/// An error with every cause behind it, `top: cause: root cause`. HTTP
/// clients say only "error sending request" at the top; the cause (refused,
/// timed out) is what people need to read.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
