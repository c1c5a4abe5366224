//! Deterministic simulation of concord clusters. Placeholder until the simulator lands.
