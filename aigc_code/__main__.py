from aigc_code.cli import main

main()
