//! The madsim side of the simulator.
