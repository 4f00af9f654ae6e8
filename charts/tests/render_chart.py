"""Renders the sidelb chart with Helm's engine and prints its objects as a JSON array.

    python3 charts/tests/render_chart.py [--kubeconfig FILE] [--namespace NS]
        [--release NAME] [--values JSON]

With --kubeconfig, Helm's `lookup` reads the live cluster (as `helm upgrade`
does, so an existing certificate Secret is reused); without, it renders
offline like `helm template`. Used by the Rust end-to-end test
tests/tests/e2e/chart/install.rs.
"""

import argparse
import json
import sys

import helm_python as helm

from chart import CHART, NAMESPACE, RELEASE, Rendered


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig")
    parser.add_argument("--namespace", default=NAMESPACE)
    parser.add_argument("--release", default=RELEASE)
    parser.add_argument("--values", default="{}", help="values as JSON")
    args = parser.parse_args()
    values = json.loads(args.values)
    with helm.Chart.load(CHART) as chart:
        if args.kubeconfig:
            with helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace) as config:
                files = config.render(chart, values, name=args.release, namespace=args.namespace)
        else:
            files = chart.render(values, name=args.release, namespace=args.namespace)
    json.dump(Rendered(files, args.namespace, args.release).docs, sys.stdout)


if __name__ == "__main__":
    main()
