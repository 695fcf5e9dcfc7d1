//! Pod networking (being written).
