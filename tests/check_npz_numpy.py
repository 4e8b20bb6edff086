"""numpy.load opens a parameter file saved by the trainer, with the documented names, shapes and
dtype, and the values agree with the trainer's --save-init of the report init (which must equal
numpy's own np.random.seed(0); randn(...)/fan_in draws).

Usage: check_npz_numpy.py TRAINER SOURCE_DIR
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

trainer, source = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "init.npz")
    subprocess.run([trainer, os.path.join(source, "config/report.json"), "--set",
                    "training.epochs=1", "--set", "data.train.limit=10", "--set",
                    "data.test.limit=10", "--save-init", path], check=True,
                   stdout=subprocess.DEVNULL)
    z = np.load(path)
    want = {"0_conv2d_weight": (8, 3, 3, 1), "3_dense_weight": (1352, 20), "3_dense_bias": (20,),
            "5_dense_weight": (20, 10), "5_dense_bias": (10,)}
    assert sorted(f for f in z.files if not f.endswith(".json")) == sorted(want), z.files
    # Beside the arrays: the config it was trained with and the input shape, as JSON text.
    import json
    model = json.loads(z["model.json"])
    assert model["input"] == [28, 28, 1] and model["classes"] == 10, model
    assert json.loads(z["config.json"])["training"]["init"] == "report"
    for name, shape in want.items():
        assert z[name].shape == shape and z[name].dtype == np.float32, (name, z[name].shape)
    np.random.seed(0)
    filters = np.random.randn(8, 3, 3) / 9
    dense = np.random.randn(1352, 20) / 1352
    out = np.random.randn(20, 10) / 20
    assert np.array_equal(z["0_conv2d_weight"][..., 0], filters.astype(np.float32))
    assert np.array_equal(z["3_dense_weight"], dense.astype(np.float32))
    assert np.array_equal(z["5_dense_weight"], out.astype(np.float32))
    assert not z["3_dense_bias"].any() and not z["5_dense_bias"].any()
print("numpy.load reads the trainer's parameters; report init equals numpy's draws")
