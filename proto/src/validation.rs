//! (being written) TEMPORARY STUB by the lead engineer so dependants compile; overwrite freely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}
impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
pub fn validate(_resource: &crate::Resource) -> Vec<FieldError> {
    Vec::new()
}
