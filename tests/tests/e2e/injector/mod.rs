//! `sidelb-injector` end to end: the chart's webhooks called by the real
//! kube-apiserver.

mod real;
