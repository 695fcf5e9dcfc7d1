//! (being written) TEMPORARY STUB by the lead engineer so dependants compile; overwrite freely.
pub struct ManifestObject {
    pub resource: crate::Resource,
    pub file: String,
    pub line: usize,
    pub warnings: Vec<String>,
}
#[derive(Debug)]
pub struct ManifestErrors(pub Vec<String>);
impl std::fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}
pub fn load(_paths: &[String]) -> Result<Vec<ManifestObject>, ManifestErrors> {
    Err(ManifestErrors(vec!["not yet".into()]))
}
