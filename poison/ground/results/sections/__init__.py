"""The registered sections of metrics.json, one file each (model, compute function, summary lines). Importing this
package registers them; ``poison.ground.results`` does. Part of the ground layer."""

from poison.ground.results.sections import replicates

__all__ = ["replicates"]
