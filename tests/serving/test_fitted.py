"""FittedCost is torch-free: a simulated run with a fitted cost model does not import torch."""
import subprocess
import sys

from llmos_sim.serving.cost import BatchShape
from llmos_sim.serving.fitted import FittedCost


def test_the_fit_recovers_the_coefficients_of_exact_data():
    true = FittedCost([1e-3, 1e-4, 2e-5, 3e-5, 1e-7, 4e-7])
    shapes = [BatchShape(n_prefill_tokens=p, n_decode_tokens=d, n_seqs=s, prefill_attn_pairs=p * p // 2,
                         decode_ctx_tokens=c) for p, d, s, c in
              [(0, 8, 8, 900), (512, 0, 1, 0), (128, 4, 5, 400), (0, 32, 32, 5000), (1024, 2, 3, 70), (64, 1, 2, 10),
               (256, 16, 17, 3000)]]
    fit = FittedCost.fit(shapes, [true.iteration_s(b) for b in shapes])
    assert fit.coef.tolist() == __import__("pytest").approx(true.coef.tolist(), rel=1e-6, abs=1e-12)


def test_importing_and_using_it_does_not_load_torch():
    code = ("import sys; from llmos_sim.serving.fitted import FittedCost; "
            "from llmos_sim.serving.cost import BatchShape; "
            "FittedCost([1, 0, 0, 0, 0, 0]).iteration_s(BatchShape(n_seqs=1)); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
