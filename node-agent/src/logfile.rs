//! Container log files (being written).
