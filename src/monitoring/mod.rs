pub mod cos;
pub mod nrpe;
