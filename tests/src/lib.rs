//! sidelb-tests.
