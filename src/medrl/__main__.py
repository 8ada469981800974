from medrl.cli import main

main()
