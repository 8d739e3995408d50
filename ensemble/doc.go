// Package ensemble runs Triton ensembles: models whose configuration has
// platform "ensemble" and an ensemble_scheduling, a graph of steps over
// other models.
//
// Build checks an ensemble against the configurations of its composing
// models and turns it into a Plan; an Executor, the ensemble's scheduler,
// runs each request through the Plan as dataflow. A step runs as soon as
// the tensors it reads exist, so independent branches run at the same time;
// it goes to its model through the server (a backends.Inferer), and so
// through that model's own scheduler: a composing model that batches
// batches steps of many ensemble requests together. Tensors pass from step
// to step without a copy. A failing step fails the request, naming the
// step's model, and cancels the steps still running.
//
// A decoupled composing model may answer a step any number of times: each
// of its responses runs the steps downstream of it once more, with that
// response's tensors, and each complete set of ensemble outputs is one
// response of the ensemble, which is then decoupled too.
package ensemble
