//! cgroup (to be written).
