from dal_dist.cli import main

main()
