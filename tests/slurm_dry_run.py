"""`python tests/slurm_dry_run.py OUT_FILE OVERRIDES...`: run `python -m jaxac.run OVERRIDES...`
with the real Hydra submitit SLURM launcher, except that instead of calling `sbatch` it writes the
job-array script it would submit to OUT_FILE (there is no SLURM cluster here)."""

import sys
from pathlib import Path

from submitit.slurm import slurm

out_file = Path(sys.argv.pop(1))


def write_script_instead_of_submitting(self, delayed_submissions):
    """What SlurmExecutor does for an array, up to the point where it would run sbatch."""
    array = slurm.SlurmExecutor(self.folder, self.max_num_timeout)
    array.update_parameters(**self.parameters)
    array.parameters["map_count"] = len(delayed_submissions)
    out_file.write_text(array._make_submission_file_text(self._submitit_command_str, "dry-run"))
    return []


slurm.SlurmExecutor.affinity = classmethod(lambda cls: 1)  # as if `srun` were on the PATH
slurm.SlurmExecutor._internal_process_submissions = write_script_instead_of_submitting

from jaxac.run import main  # noqa: E402  (after the patch, as the launcher imports submitit late)

main()
