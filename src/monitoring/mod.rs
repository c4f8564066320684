pub mod nrpe;
